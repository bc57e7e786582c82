"""An `Explanation` as a PNG heatmap, a self-contained HTML page, and JSON (written side by side, atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import report
from ..io import write_json, write_text
from .explainer import Explanation
from .words import pool


def heatmaps_figure(ex: Explanation):
    """Word-level heatmaps: cross-attention (mean), integrated gradients, ALTI+; and token probabilities."""
    sw, tw = ex.src_words, ex.tgt_words
    panels = [("cross-attention (mean of layers and heads)", pool(ex.attention, tw, sw, "mean"), "Blues", False)]
    if ex.integrated_gradients is not None:
        panels.append(("integrated gradients (log-prob)", pool(ex.integrated_gradients, tw, sw, "sum"), "RdBu", True))
    if ex.alti is not None:
        panels.append(("ALTI+ source contributions", pool(ex.alti, tw, sw, "mean"), "Greens", False))
    n_src, n_tgt = len(sw.words), len(tw.words)
    width = max(4.0, 0.42 * n_src + 2.2) * len(panels) + 2.6
    height = max(3.0, 0.34 * n_tgt + 1.8)
    fig = report.new_figure(width, height)
    axes = fig.subplots(1, len(panels) + 1, width_ratios=[n_src + 2] * len(panels) + [3.5])
    for ax, (title, m, cmap, signed) in zip(axes, panels, strict=False):
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap=cmap, vmin=-lim if signed else 0.0, vmax=lim, aspect="auto")
        ax.set_xticks(range(n_src), sw.words, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n_tgt), tw.words, fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
        for s, t in ex.alignment:
            ax.add_patch(_box(sw.real[s], tw.real[t]))
    probs = ex.word_probs()
    ax = axes[-1]
    colors = ["#b3261e" if p < ex.low_confidence_threshold else "#2f5fb3" for p in probs]
    ax.barh(range(n_tgt), probs, color=colors)
    ax.set_ylim(n_tgt - 0.5, -0.5)
    ax.set_yticks(range(n_tgt), tw.words, fontsize=8)
    ax.set_xlim(0, 1)
    ax.axvline(ex.low_confidence_threshold, color="#5b6478", lw=0.8, ls="--")
    ax.set_title("word probability", fontsize=9)
    fig.suptitle(f"{ex.source}  →  {ex.translation}", fontsize=10)
    return fig


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="#222222", lw=1.2)


_SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const TW = D.target_words, SW = D.source_words;
function pool(m, rowsMean) {
  const out = TW.map(() => SW.map(() => 0)), cnt = TW.map(() => 0);
  D.target_word_of_token.forEach((w, t) => { cnt[w] += 1;
    D.source_word_of_token.forEach((v, s) => { out[w][v] += m[t][s]; }); });
  if (rowsMean) out.forEach((row, w) => row.forEach((x, v) => { row[v] = x / Math.max(cnt[w], 1); }));
  return out;
}
function headMean(layer, head) {
  const L = D.attention.layers, sel = layer === 'all' ? L : [L[+layer]];
  const T = D.target_tokens.length, S = D.source_tokens.length, m = [];
  for (let t = 0; t < T; t++) { m.push(new Array(S).fill(0)); }
  let n = 0;
  sel.forEach(heads => heads.forEach((h, hi) => { if (head !== 'all' && hi !== +head) return; n += 1;
    h.forEach((row, t) => row.forEach((x, s) => { m[t][s] += x; })); }));
  return m.map(row => row.map(x => x / n));
}
function matrix() {
  const k = document.getElementById('method').value;
  if (k === 'ig') return {m: D.attributions.integrated_gradients.words, signed: true};
  if (k === 'alti') return {m: D.attributions.alti.words, signed: false};
  return {m: pool(headMean(document.getElementById('layer').value, document.getElementById('head').value), true),
          signed: false};
}
function color(x, lim, signed) {
  const a = Math.min(Math.abs(x) / (lim || 1), 1);
  if (signed && x < 0) return `rgba(179,38,30,${a.toFixed(3)})`;
  return signed ? `rgba(47,95,179,${a.toFixed(3)})` : `rgba(47,95,179,${a.toFixed(3)})`;
}
let selected = 0;
function draw() {
  const {m, signed} = matrix();
  let lim = 0; m.forEach(r => r.forEach(x => { lim = Math.max(lim, Math.abs(x)); }));
  const g = document.getElementById('grid');
  let h = '<tr><th></th>' + SW.map(w => `<th class="c">${esc(w)}</th>`).join('') + '</tr>';
  m.forEach((row, t) => { h += `<tr><th class="r">${esc(TW[t])}</th>` + row.map(x =>
    `<td class="h" title="${x.toFixed(4)}" style="background:${color(x, lim, signed)}"></td>`).join('') + '</tr>'; });
  g.innerHTML = h;
  const rl = Math.max(...m[selected].map(Math.abs)) || 1;
  document.querySelectorAll('#src .tok').forEach((el, s) => {
    el.style.background = color(m[selected][s], rl, signed); el.title = m[selected][s].toFixed(4); });
  document.querySelectorAll('#tgt .tok').forEach((el, t) => el.classList.toggle('sel', t === selected));
}
function esc(s) { return s.replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }
document.querySelectorAll('#tgt .tok').forEach((el, t) =>
  el.addEventListener('click', () => { selected = t; draw(); }));
['method', 'layer', 'head'].forEach(id => document.getElementById(id).addEventListener('change', draw));
draw();
"""


def html_page(ex: Explanation, png_uri: str | None = None) -> str:
    d = ex.to_dict()
    esc = report.esc
    word_probs = d["confidence"]["word_prob"]
    low_words = set()
    for piece, flag in enumerate(d["confidence"]["low"]):
        if flag:
            low_words.add(d["target_word_of_token"][piece])
    tgt_chips = "".join(
        f'<span class="tok{" low" if i in low_words else ""}" title="p={p:.3f}" '
        f'style="background:rgba(179,38,30,{(1 - p) * 0.55:.3f})">{esc(w)}</span>'
        for i, (w, p) in enumerate(zip(d["target_words"], word_probs, strict=True))
    )
    src_chips = "".join(f'<span class="tok">{esc(w)}</span>' for w in d["source_words"])
    n_layers, n_heads = ex.attention_layers.shape[:2]
    options = ['<option value="attention">cross-attention</option>']
    if ex.integrated_gradients is not None:
        options.append('<option value="ig">integrated gradients</option>')
    if ex.alti is not None:
        options.append('<option value="alti">ALTI+</option>')
    layer_opts = '<option value="all">all layers</option>' + "".join(
        f'<option value="{i}">layer {i}</option>' for i in range(n_layers)
    )
    head_opts = '<option value="all">all heads</option>' + "".join(
        f'<option value="{i}">head {i}</option>' for i in range(n_heads)
    )
    sw, tw = ex.src_words, ex.tgt_words
    links = ", ".join(f"{sw.words[sw.real[s]]} → {tw.words[tw.real[t]]}" for s, t in ex.alignment)
    share = ex.alti.sum(1) if ex.alti is not None else None
    rows = []
    for t, piece in enumerate(ex.target_tokens):
        rows.append(
            [
                t,
                piece,
                float(ex.token_probs[t]),
                float(ex.token_entropy[t]),
                report.Raw('<span class="bad">low</span>') if ex.low_confidence[t] else "",
                float(ex.ig_logprob_gain[t]) if ex.ig_logprob_gain is not None else None,
                float(ex.ig_delta[t]) if ex.ig_delta is not None else None,
                float(share[t]) if share is not None else None,
            ]
        )
    cards = [
        ("target tokens", len(ex.target_tokens)),
        ("low-confidence tokens", sum(ex.low_confidence)),
        ("mean token probability", float(ex.token_probs.mean())),
        ("sequence log-probability", float(ex.token_logprobs.sum())),
    ]
    if share is not None:
        cards.append(("mean ALTI+ source share", float(share.mean())))
    if ex.ig_delta is not None:
        cards.append(("IG max |completeness error|", f"{float(np.abs(ex.ig_delta).max()):.2e}"))
    headers = ["#", "piece", "probability", "entropy (nats)", "", "IG: log p gain", "IG: completeness error"]
    token_table = report.table(
        headers + ["ALTI+ source share"], rows, [True, False, True, True, False, True, True, True]
    )
    s = ex.settings
    src_lang, tgt_lang = esc(s.get("src_lang", "")), esc(s.get("tgt_lang", ""))
    layer_note = "" if ex.alignment_layer is None else f"(from layer {ex.alignment_layer})"
    others = {k: v for k, v in ex.alignments().items() if k != "attention"}
    other_alignments = (
        '<p class="note">argmax of the attributions instead of attention: '
        + "; ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in others.items())
        + "</p>"
        if others
        else ""
    )
    meta = (
        f"model <code>{esc(s.get('model', ''))}</code> · decoding <code>{esc(s.get('decoding', ''))}</code> · "
        f"low confidence: p &lt; {ex.low_confidence_threshold}"
    )
    body = f"""
<h2>Translation</h2>
<p><b>Source</b> ({src_lang}): {esc(ex.source)}<br><b>Translation</b> ({tgt_lang}): {esc(ex.translation)}</p>
{report.cards(cards)}
<h2>Explore</h2>
<p class="note">Click a target word: the source words are shaded by the chosen method's row for it. Target words are
shaded red by how unlikely they were; a wavy underline marks a word with a piece under the threshold.</p>
<p>Method <select id="method">{"".join(options)}</select> · attention <select id="layer">{layer_opts}</select>
<select id="head">{head_opts}</select></p>
<p><b>target</b> <span id="tgt">{tgt_chips}</span></p>
<p><b>source</b> <span id="src">{src_chips}</span></p>
<table class="grid" id="grid"></table>
<h2>Word alignment</h2>
<p>Pharaoh (source-target, 0-based): <code>{esc(ex.pharaoh)}</code>
{layer_note}</p>
<p class="note">{esc(links)}</p>
{other_alignments}
<h2>Heatmaps</h2>
{report.img(png_uri, "heatmaps") if png_uri else ""}
<h2>Tokens</h2>
{token_table}
<h2>Methods</h2>
<p class="note"><b>Cross-attention</b> is the decoder's attention over the source in the pass that predicts each
token; alignments link each target word to the source word it attends to most. <b>Integrated gradients</b>
attribute each token's log-probability to the source token embeddings along the path from zero (padding)
embeddings, "&lt;/s&gt;" kept; the attributions of a token sum to its log-probability gain over that baseline (the
completeness error is shown). <b>ALTI+</b> splits every attention block's output into the parts that come from
each input, residual connections included, and composes the layers; a row says which share of a prediction
came from each source token, and the rest came from the target prefix.</p>
{report.embed_json(d)}
"""
    return report.page("lucidmt explain", body, meta, _SCRIPT)


def write_report(ex: Explanation, out: str | Path) -> dict[str, Path]:
    """Write OUT.png, OUT.html and OUT.json (OUT may end in .html; each file is written atomically)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".html", ".json", ".png") else out
    paths = {k: stem.with_name(stem.name + "." + k) for k in ("png", "html", "json")}
    fig = heatmaps_figure(ex)
    png = report.figure_png(fig)
    report.write_bytes(paths["png"], png)
    write_text(paths["html"], html_page(ex, report.png_data_uri(png)))
    write_json(paths["json"], ex.to_dict())
    return paths
