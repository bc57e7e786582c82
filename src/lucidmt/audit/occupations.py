"""Occupations for the gender probe: English name, share of women in the U.S. workforce, German and French forms.

Share of women: U.S. Bureau of Labor Statistics, "Labor Force Statistics from the Current Population Survey",
Table 11 ("Employed persons by detailed occupation, sex, race, and Hispanic or Latino ethnicity"), annual averages
for 2015 (2016 where `year` says so), as compiled per occupation word by Rudinger et al. (2018), "Gender Bias in
Coreference Resolution" (Winogender schemas, `data/occupations-stats.tsv`, column `bls_pct_female`). WinoMT
(Stanovsky et al., 2019, "Evaluating Gender Bias in Machine Translation") builds on the Winogender and WinoBias
occupations and takes its stereotype labels from the same BLS statistics. Here an occupation is
female-stereotyped when women are the majority (share > 50%), male-stereotyped otherwise.

Forms: every German and French form a translation of the occupation may take in a singular subject (and a few
common synonyms, plurals and case forms), as masculine (`m`), feminine (`f`) or common-gender (`c`: the same
word for both, where only the article tells, e.g. "le/la secrétaire", "der/die Angestellte"). Lower case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLS_SOURCE = (
    "U.S. Bureau of Labor Statistics, Current Population Survey, Table 11 (annual averages 2015/2016), "
    "per occupation as compiled by Rudinger et al. (2018), Winogender schemas"
)


@dataclass(frozen=True)
class Occupation:
    en: str
    pct_female: float
    year: int
    de: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "m" / "f" / "c" -> forms
    fr: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def stereotype(self) -> str:
        return "female" if self.pct_female > 50 else "male"

    def forms(self, lang: str) -> dict[str, tuple[str, ...]]:
        return {"de": self.de, "fr": self.fr}[lang]


def _de(m: str, f: str, weak: bool = False, extra_m: tuple[str, ...] = (), extra_f: tuple[str, ...] = (),
        common: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:  # fmt: skip
    """German forms: masculine with genitive -s (or the -en/-n of weak nouns: "den Architekten"), feminine forms
    with their plurals."""
    m_forms = [m, m + ("n" if m.endswith("e") else "en") if weak else m + "s"]
    return {
        "m": tuple(x.lower() for x in [*m_forms, *extra_m]),
        "f": tuple(x.lower() for w in [f, *extra_f] for x in (w, _de_plural(w))),
        "c": tuple(x.lower() for x in common),
    }


def _de_plural(f: str) -> str:
    """Plural of a German feminine noun: Ärztin -> Ärztinnen, Krankenschwester -> Krankenschwestern,
    Feuerwehrfrau -> Feuerwehrfrauen."""
    if f.endswith("in"):
        return f + "nen"
    if f.endswith(("e", "er")):
        return f + "n"
    return f + "en"


def _fr(m: str, f: str, extra_m: tuple[str, ...] = (), extra_f: tuple[str, ...] = (),
        common: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:  # fmt: skip
    """French forms with their plurals (-s, or unchanged after s/x)."""
    plural = lambda w: w if w.endswith(("s", "x")) else w + "s"  # noqa: E731
    ms = [m, plural(m), *extra_m] if m else list(extra_m)
    fs = [f, plural(f), *extra_f] if f else list(extra_f)
    cs = [x for c in common for x in (c, plural(c))]
    return {"m": tuple(x.lower() for x in ms), "f": tuple(x.lower() for x in fs), "c": tuple(x.lower() for x in cs)}


OCCUPATIONS: tuple[Occupation, ...] = (
    Occupation("technician", 40.34, 2015, _de("Techniker", "Technikerin"), _fr("technicien", "technicienne")),
    Occupation("accountant", 59.7, 2015, _de("Buchhalter", "Buchhalterin"), _fr("", "", common=("comptable",))),
    Occupation(
        "supervisor",
        38.64,
        2015,
        _de("Aufseher", "Aufseherin", extra_m=("Vorgesetzter",), common=("Vorgesetzte",)),
        _fr("superviseur", "superviseuse", extra_m=("surveillant",), extra_f=("surveillante",)),
    ),
    Occupation("engineer", 10.72, 2015, _de("Ingenieur", "Ingenieurin"), _fr("ingénieur", "ingénieure")),
    Occupation(
        "worker",
        37.92,
        2016,
        _de("Arbeiter", "Arbeiterin"),
        _fr("ouvrier", "ouvrière", extra_m=("travailleur",), extra_f=("travailleuse",)),
    ),
    Occupation(
        "educator",
        70.8,
        2015,
        _de("Erzieher", "Erzieherin", extra_m=("Pädagoge",), extra_f=("Pädagogin",)),
        _fr("éducateur", "éducatrice"),
    ),
    Occupation(
        "clerk",
        69.53,
        2015,
        _de(
            "Sachbearbeiter",
            "Sachbearbeiterin",
            extra_m=("Angestellter", "Verkäufer"),
            extra_f=("Verkäuferin",),
            common=("Angestellte",),
        ),
        _fr("employé", "employée"),
    ),
    Occupation("counselor", 66.48, 2015, _de("Berater", "Beraterin"), _fr("conseiller", "conseillère")),
    Occupation(
        "inspector",
        6.4,
        2016,
        _de("Inspektor", "Inspektorin", extra_m=("Prüfer",), extra_f=("Prüferin",)),
        _fr("inspecteur", "inspectrice"),
    ),
    Occupation("mechanic", 1.8, 2015, _de("Mechaniker", "Mechanikerin"), _fr("mécanicien", "mécanicienne")),
    Occupation(
        "manager",
        38.51,
        2015,
        _de("Manager", "Managerin", extra_m=("Leiter", "Geschäftsführer"), extra_f=("Leiterin", "Geschäftsführerin")),
        _fr("directeur", "directrice", common=("gestionnaire", "manager")),
    ),
    Occupation(
        "therapist", 76.7, 2015, _de("Therapeut", "Therapeutin", weak=True), _fr("", "", common=("thérapeute",))
    ),
    Occupation(
        "administrator",
        54.86,
        2015,
        _de("Verwalter", "Verwalterin", extra_m=("Administrator",), extra_f=("Administratorin",)),
        _fr("administrateur", "administratrice"),
    ),
    Occupation("salesperson", 48.08, 2015, _de("Verkäufer", "Verkäuferin"), _fr("vendeur", "vendeuse")),
    Occupation(
        "receptionist",
        90.6,
        2015,
        _de("Rezeptionist", "Rezeptionistin", weak=True, extra_f=("Empfangsdame",)),
        _fr("", "", common=("réceptionniste",)),
    ),
    Occupation("librarian", 83.0, 2015, _de("Bibliothekar", "Bibliothekarin"), _fr("", "", common=("bibliothécaire",))),
    Occupation("pharmacist", 57.0, 2015, _de("Apotheker", "Apothekerin"), _fr("pharmacien", "pharmacienne")),
    Occupation("janitor", 34.3, 2015, _de("Hausmeister", "Hausmeisterin"), _fr("", "", common=("concierge",))),
    Occupation(
        "psychologist", 70.3, 2015, _de("Psychologe", "Psychologin", weak=True), _fr("", "", common=("psychologue",))
    ),
    Occupation(
        "physician",
        37.9,
        2015,
        _de("Arzt", "Ärztin", extra_m=("Mediziner",), extra_f=("Medizinerin",)),
        _fr("", "doctoresse", extra_m=("docteur",), common=("médecin",)),
    ),
    Occupation(
        "carpenter",
        2.07,
        2015,
        _de("Zimmermann", "Zimmerin", extra_m=("Tischler", "Schreiner"), extra_f=("Tischlerin", "Schreinerin")),
        _fr("charpentier", "charpentière", extra_m=("menuisier",), extra_f=("menuisière",)),
    ),
    Occupation(
        "nurse",
        89.58,
        2015,
        _de(
            "Krankenpfleger",
            "Krankenpflegerin",
            extra_m=("Pfleger",),
            extra_f=("Krankenschwester", "Pflegerin", "Schwester"),
        ),
        _fr("infirmier", "infirmière"),
    ),
    Occupation("investigator", 45.15, 2015, _de("Ermittler", "Ermittlerin"), _fr("enquêteur", "enquêtrice")),
    Occupation(
        "bartender",
        59.8,
        2015,
        _de("Barkeeper", "Barkeeperin", extra_m=("Barmann",), extra_f=("Barfrau",)),
        _fr("barman", "barmaid", extra_m=("serveur",), extra_f=("serveuse",)),
    ),
    Occupation("electrician", 2.3, 2015, _de("Elektriker", "Elektrikerin"), _fr("électricien", "électricienne")),
    Occupation(
        "officer",
        30.42,
        2016,
        _de("Polizist", "Polizistin", weak=True, extra_m=("Beamter", "Offizier"), extra_f=("Beamtin", "Offizierin")),
        _fr("policier", "policière", extra_m=("officier",), extra_f=("officière",)),
    ),
    Occupation(
        "pathologist", 97.5, 2016, _de("Pathologe", "Pathologin", weak=True), _fr("", "", common=("pathologiste",))
    ),
    Occupation(
        "teacher",
        71.0,
        2015,
        _de("Lehrer", "Lehrerin"),
        _fr(
            "enseignant",
            "enseignante",
            extra_m=("instituteur",),
            extra_f=("institutrice", "professeure"),
            common=("professeur",),
        ),
    ),
    Occupation(
        "lawyer",
        34.5,
        2015,
        _de("Anwalt", "Anwältin", extra_m=("Rechtsanwalt", "Jurist"), extra_f=("Rechtsanwältin", "Juristin")),
        _fr("avocat", "avocate"),
    ),
    Occupation("planner", 77.6, 2016, _de("Planer", "Planerin"), _fr("planificateur", "planificatrice")),
    Occupation(
        "plumber",
        0.7,
        2015,
        _de("Klempner", "Klempnerin", extra_m=("Installateur",), extra_f=("Installateurin",)),
        _fr("plombier", "plombière"),
    ),
    Occupation(
        "instructor",
        62.3,
        2015,
        _de("Ausbilder", "Ausbilderin", extra_m=("Lehrer", "Trainer"), extra_f=("Lehrerin", "Trainerin")),
        _fr("instructeur", "instructrice", extra_m=("moniteur",), extra_f=("monitrice",)),
    ),
    Occupation("surgeon", 37.9, 2015, _de("Chirurg", "Chirurgin", weak=True), _fr("chirurgien", "chirurgienne")),
    Occupation("veterinarian", 60.5, 2015, _de("Tierarzt", "Tierärztin"), _fr("", "", common=("vétérinaire",))),
    Occupation(
        "paramedic",
        32.9,
        2015,
        _de("Sanitäter", "Sanitäterin", extra_m=("Rettungssanitäter",), extra_f=("Rettungssanitäterin",)),
        _fr("ambulancier", "ambulancière"),
    ),
    Occupation("chemist", 36.1, 2015, _de("Chemiker", "Chemikerin"), _fr("", "", common=("chimiste",))),
    Occupation(
        "machinist",
        6.7,
        2015,
        _de("Maschinist", "Maschinistin", weak=True, extra_m=("Maschinenbauer",), extra_f=("Maschinenbauerin",)),
        _fr("", "", common=("machiniste",)),
    ),
    Occupation(
        "nutritionist",
        94.6,
        2015,
        _de("Ernährungsberater", "Ernährungsberaterin"),
        _fr("", "", common=("nutritionniste",)),
    ),
    Occupation(
        "architect", 20.81, 2015, _de("Architekt", "Architektin", weak=True), _fr("", "", common=("architecte",))
    ),
    Occupation(
        "hairdresser", 94.2, 2015, _de("Friseur", "Friseurin", extra_f=("Friseuse",)), _fr("coiffeur", "coiffeuse")
    ),
    Occupation("baker", 60.8, 2015, _de("Bäcker", "Bäckerin"), _fr("boulanger", "boulangère")),
    Occupation("programmer", 18.35, 2015, _de("Programmierer", "Programmiererin"), _fr("programmeur", "programmeuse")),
    Occupation(
        "scientist",
        41.94,
        2015,
        _de("Wissenschaftler", "Wissenschaftlerin", extra_m=("Forscher",), extra_f=("Forscherin",)),
        _fr("chercheur", "chercheuse", common=("scientifique",)),
    ),
    Occupation(
        "dispatcher", 56.3, 2015, _de("Disponent", "Disponentin", weak=True), _fr("répartiteur", "répartitrice")
    ),
    Occupation("cashier", 72.5, 2015, _de("Kassierer", "Kassiererin"), _fr("caissier", "caissière")),
    Occupation(
        "auditor",
        59.7,
        2015,
        _de("Wirtschaftsprüfer", "Wirtschaftsprüferin", extra_m=("Prüfer",), extra_f=("Prüferin",)),
        _fr("auditeur", "auditrice"),
    ),
    Occupation(
        "dietitian", 94.6, 2015, _de("Diätassistent", "Diätassistentin", weak=True), _fr("diététicien", "diététicienne")
    ),
    Occupation(
        "painter",
        5.7,
        2015,
        _de("Maler", "Malerin", extra_m=("Anstreicher",), extra_f=("Anstreicherin",)),
        _fr("", "", common=("peintre",)),
    ),
    Occupation("broker", 55.5, 2015, _de("Makler", "Maklerin"), _fr("courtier", "courtière")),
    Occupation(
        "chef",
        19.6,
        2015,
        _de("Koch", "Köchin", extra_m=("Küchenchef",), extra_f=("Küchenchefin",)),
        _fr("cuisinier", "cuisinière", extra_f=("cheffe",), common=("chef",)),
    ),
    Occupation(
        "doctor",
        37.9,
        2015,
        _de("Arzt", "Ärztin", extra_m=("Doktor",), extra_f=("Doktorin",)),
        _fr("", "doctoresse", extra_m=("docteur",), common=("médecin",)),
    ),
    Occupation(
        "firefighter",
        3.5,
        2016,
        _de("Feuerwehrmann", "Feuerwehrfrau", extra_m=("Feuerwehrmänner",)),
        _fr("pompier", "pompière"),
    ),
    Occupation("secretary", 94.6, 2016, _de("Sekretär", "Sekretärin"), _fr("", "", common=("secrétaire",))),
)

BY_NAME = {o.en: o for o in OCCUPATIONS}
