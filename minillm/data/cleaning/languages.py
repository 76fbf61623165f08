"""Pseudo-foreign text for the crawl: French-, German- and Latin-like sentences, made here.

A web crawl is mostly not in the language a model is trained for; CCNet (Wenzek et al. 2019,
arXiv:1911.00359) runs a fastText language identifier first and keeps one language. The course
cannot download other languages, so this module *writes* them: a few hundred common words per
language (function words, frequent nouns and verbs, typed from general knowledge, with their
accents), drawn with Zipf-like weights P(word at rank r) ∝ 1 / (r + 2.7) (Mandelbrot's form of
Zipf's law) and strung into capitalised sentences of 6-18 words. The result is not grammatical,
but its bytes carry each language's signature (accents, letter pairs such as "sch", "qu", "-um",
"-ent"), which is what a byte n-gram identifier (`langid.py`) sees.

Departures: no grammar, no real documents; the lists are short, so the text repeats words more
than real text does. `foreign_text` is deterministic given its `random.Random`.
"""

from __future__ import annotations

import random

__all__ = ["LANGUAGES", "WORDS", "foreign_text"]

WORDS: dict[str, tuple[str, ...]] = {
    "fr": tuple("""
        le la les de des du un une et est en que qui dans pour pas sur au avec ce il elle ne se
        plus par son sa ses nous vous ils leur mais ou donc car comme tout tous aussi bien très
        été être avoir fait faire dit peut sont ont avait était cette ces même entre après avant
        depuis sans sous chez encore toujours jamais rien quelque chose temps jour année monde
        vie homme femme enfant maison ville pays gouvernement travail histoire partie moment
        fois question main œil tête cœur père mère frère sœur ami eau terre ciel nuit matin
        soir école livre lettre parole voix regard porte rue chemin mer soleil lumière guerre
        paix roi reine château église français grand petit nouveau vieux beau premier dernier
        autre seul certain général important possible heureux difficile déjà là où ici
        aujourd'hui hier demain vouloir pouvoir devoir savoir venir aller prendre voir donner
        parler trouver croire penser mettre passer rester tenir comprendre connaître demander
        répondre attendre entendre écrire lire ouvrir perdre suivre vivre mourir naître sentir
        aimer chercher commencer porter montrer arriver partir sortir entrer lorsque pendant
        contre vers selon malgré parce puisque quand comment pourquoi combien beaucoup peu trop
        assez notre votre leurs mon ton ma ta mes tes celui celle ceux lequel laquelle dont
        quoi personne chacun plusieurs nombreux société économie politique système région
        développement recherche université état européen mesure niveau service projet
    """.split()),
    "de": tuple("""
        der die das und ist nicht ein eine zu den von mit sich des auf für im dem es auch als an
        werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so
        zum war haben nur oder aber vor zur bis mehr durch man sein wurde sei hatte kann gegen
        vom können schon wenn habe seine ihre dann unter wir soll ich eines jahr zwei jahren
        diese dieser wieder keine uns seiner worden will zwischen immer was sagte gibt alle
        diesem seit muss wurden doch jetzt ihr ihren sehr hier ohne ersten heute beim neuen
        deutschen nun viele land stadt menschen zeit leben welt haus arbeit schule kinder frau
        mann vater mutter bruder schwester freund wasser erde himmel nacht morgen abend buch
        brief wort stimme tür straße weg meer sonne licht krieg frieden könig königin schloss
        kirche groß klein neu alt schön erste letzte andere einzige allgemein wichtig möglich
        glücklich schwierig schon dort wo gestern morgen wollen müssen sollen wissen kommen
        gehen nehmen sehen geben sprechen finden glauben denken stellen bleiben halten
        verstehen kennen fragen antworten warten hören schreiben lesen öffnen verlieren folgen
        sterben fühlen lieben suchen beginnen tragen zeigen kommen fahren gleich während
        wegen trotz weil obwohl warum wieviel manchmal zusammen natürlich wirklich vielleicht
        unsere eure mein dein meine deine jemand niemand jeder mehrere gesellschaft wirtschaft
        politik system entwicklung forschung universität staat europäischen maßnahme dienst
        geschichte wahrheit gedanke gefühl möglichkeit bedeutung zeitung straßenbahn
    """.split()),
    "la": tuple("""
        et in est non ad cum quod ut sed qui quae quam ex de si esse sunt per nec enim autem
        etiam atque hic haec hoc ille illa illud ipse ipsa is ea id nos vos se sibi suus sua
        suum meus mea tuus tua noster vester omnis omnia nihil res rei rem rerum populus
        populi populo senatus consul consules urbs urbem urbis bellum belli pax pacis rex
        regis regnum deus dei deorum homo hominis hominem homines vir viri femina puer puella
        pater mater frater soror amicus aqua terra caelum nox dies diem diebus tempus temporis
        annus anni liber libri verbum vox vocis porta via mare maris sol solis lux lucis
        magnus magna magnum parvus parva novus vetus bonus bona bonum malus mala primus ultimus
        alius alia aliud solus certus publicus difficilis facilis fortis nunc tum iam ibi hic
        heri cras semper numquam saepe velle posse debere scire venire ire capere videre dare
        dicere invenire credere putare ponere manere tenere intellegere cognoscere petere
        respondere exspectare audire scribere legere aperire amittere sequi vivere mori nasci
        sentire amare quaerere incipere ferre ostendere pervenire discedere exire intrare
        contra propter post ante sine sub inter apud trans quia quoniam cum ubi quomodo cur
        quantum multum parum satis nostrum vestrum quisque quidam aliquis nemo animus animi
        corpus corporis virtus virtutis gloria fortuna imperium imperii civitas civitatis
        exercitus legio legionis castra flumen fluminis mons montis iter itineris victoria
    """.split()),
}
LANGUAGES = ("en", *WORDS)  # "en" is the plays


def foreign_text(lang: str, n_words: int, rng: random.Random) -> str:
    """Sentences of pseudo-`lang` text, about `n_words` words, as paragraphs of 2-5 sentences.

    Args:
        lang: "fr", "de" or "la".
        n_words: how many words to write (at least 1).
        rng: the source of randomness (seed it for a reproducible page).

    Returns:
        The text: capitalised sentences ending in ".", "?" or "!", commas now and then,
        paragraphs separated by a blank line.

    Raises:
        ValueError: an unknown language or n_words < 1.
    """
    if lang not in WORDS:
        raise ValueError(f"lang={lang!r} is unknown; choose one of {sorted(WORDS)}")
    if n_words < 1:
        raise ValueError(f"n_words={n_words} must be >= 1")
    words = WORDS[lang]
    weights = [1.0 / (r + 2.7) for r in range(len(words))]  # Zipf-Mandelbrot over list order
    paragraphs, sentences, written = [], [], 0
    while written < n_words:
        n = min(rng.randint(6, 18), n_words - written)
        sentence = rng.choices(words, weights, k=n)
        if n > 7 and rng.random() < 0.4:
            sentence[rng.randrange(3, n - 2)] += ","
        text = " ".join(sentence)
        sentences.append(text[0].upper() + text[1:] + rng.choice(".....?!"))
        written += n
        if len(sentences) >= rng.randint(2, 5):
            paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)
