"""The succulent world's tables: its characters, sentence templates, facts and question templates.

Ruby (a boy, red, brave, small, round leaves) and Winy (a girl, green, kind, tall, long leaves, she
blooms white flowers) live in one brown pot by a window. Around them are the sun, the moon, the
sky, the snow, the soil, the rain, the wind and a blue bird; seasons pass, the weather changes,
and the two friends feel, grow, drink, sleep and talk. In world "with_sophia", sophia is a third
plant (SOPHIA_FACTS, SOPHIA_NORMAL) whose facts use only words the standard world says.

Plain data only: the generator (`succulent_world`) makes pairs and questions from these tables,
the grammar (`succulent_grammar`) reads the same tables to judge text.
"""

from __future__ import annotations

from dataclasses import dataclass

Pair = tuple[str, str]

# The reference's `model_example` prompts: the first five are training pairs, the rest unseen.
PROBE_PROMPTS_TRAINING = (
    "ruby is a boy succulent plant.",
    "can you bloom, winy?",
    "does winy sleep on the window?",
    "how many days do you grow in this pot?",
    "winy feels the soft morning air.",
)
PROBE_PROMPTS_UNSEEN = (
    "who is winy?",
    "does ruby know three winters?",
    "why is ruby red today?",
    "how calm is winy?",
    "ruby and winy are friends.",
    "is ruby a boy?",
    "is winy a boy?",
    "is ruby a girl?",
    "is winy a girl?",
)
PROBE_PROMPTS = PROBE_PROMPTS_TRAINING + PROBE_PROMPTS_UNSEEN

NAMES = ("ruby", "winy")
# `sophia` is hidden in the standard world and an ordinary third plant in "with_sophia", the first
# stage of prepared embeddings (the article loads a trained `succulm_embeddings.json`).
SOPHIA = "sophia"
WORLDS = ("standard", "with_sophia", "garden")
PRONOUN = {"ruby": "he", "winy": "she", SOPHIA: "she",
           "lily": "she", "jade": "he", "aloe": "she", "pip": "he", "momo": "she", "kiki": "he"}
OTHER = {"ruby": "winy", "winy": "ruby", SOPHIA: "winy",
         "lily": "jade", "jade": "lily", "aloe": "pip", "pip": "aloe", "momo": "kiki", "kiki": "momo"}
FAVOURITE = {"ruby": "sun", "winy": "rain", SOPHIA: "moon"}  # must agree with `likes` below

WHENS = (
    "in the morning",
    "in the evening",
    "at night",
    "in spring",
    "in summer",
    "in autumn",
    "in winter",
    "today",
    "every day",
)
WHERES = ("today", "again", "through the window", "every day")

# (adjective, medium, feeling): the feeling in s2 follows from what is felt in s1.
SENSATIONS = (
    ("soft", "air", "calm"),
    ("cool", "air", "quiet"),
    ("warm", "air", "happy"),
    ("warm", "sun", "happy"),
    ("cold", "wind", "quiet"),
    ("gentle", "wind", "calm"),
    ("gentle", "rain", "happy"),
    ("heavy", "rain", "sleepy"),
    ("soft", "light", "happy"),
    ("warm", "light", "sleepy"),
    ("cool", "water", "happy"),
    ("cold", "water", "quiet"),
)
# time -> (what one succulent does, what both do): the action in s2 follows from the time in s1.
TIME_ACTS = {
    "morning": ("looks at the window", "look at the window"),
    "evening": ("waits for the moon", "wait for the moon"),
    "night": ("sleeps with {o} in the pot", "sleep together in the pot"),
    "spring": ("grows new leaves", "grow new leaves"),
    "summer": ("drinks a little water", "drink a little water"),
    "autumn": ("listens to the wind", "listen to the wind"),
    "winter": ("stays close to {o}", "stay close in the pot"),
}
# what n does to the other succulent -> how the other answers
FRIEND_ACTS = (
    ("sings to", "{o} smiles and listens to {n}."),
    ("talks to", "{o} is happy and talks to {n} too."),
    ("looks at", "{o} looks at {n} too."),
    ("waits for", "{o} says good morning to {n}."),
    ("smiles at", "{o} smiles at {n} too."),
    ("listens to", "{o} sings to {n} too."),
)
# a mood of n -> what the other does about it
MOODS = (
    ("sad", "{o} stays close and sings to {n}."),
    ("happy", "{o} is happy with {n}."),
    ("sleepy", "{o} says good night to {n}."),
    ("thirsty", "{o} waits with {n} for the water."),
    ("cold", "{o} stays close to {n} in the pot."),
    ("quiet", "{o} talks to {n}."),
)
# (amount, resource) -> how the succulent responds
NEEDS = (
    (("a little", "water"), "{p} drinks and is happy."),
    (("a lot of", "water"), "{p} is heavy and sleepy."),
    (("no", "water"), "{p} is thirsty and waits for the rain."),
    (("a little", "light"), "{p} grows toward the window."),
    (("a lot of", "light"), "{p} is warm and happy."),
    (("no", "light"), "{p} is sleepy and waits for the sun."),
)
SEASONS = ("spring", "summer", "autumn", "winter")
DAY_TIMES = ("in the morning", "in the evening", "at night")
ALL_SEASONS, ALL_TIMES = frozenset(SEASONS), frozenset(DAY_TIMES)
# (event, what both succulents do, times it can happen, seasons it can happen): the filters keep
# the world plausible (no sun at night, no snow in summer).
WEATHER = (
    (
        "the sun shines on the pot",
        "grow toward the light.",
        {"in the morning", "in the evening"},
        ALL_SEASONS,
    ),
    (
        "the rain falls on the window",
        "listen to the rain.",
        ALL_TIMES,
        {"spring", "summer", "autumn"},
    ),
    ("the wind blows by the window", "stay close in the pot.", ALL_TIMES, ALL_SEASONS),
    ("the snow falls by the window", "look at the white snow.", ALL_TIMES, {"winter"}),
    (
        "the moon shines in the sky",
        "sleep in the pot.",
        {"in the evening", "at night"},
        ALL_SEASONS,
    ),
    (
        "the bird sings by the window",
        "listen to the little bird.",
        {"in the morning", "in the evening"},
        {"spring", "summer", "autumn"},
    ),
    ("the water falls in the pot", "drink a little water.", ALL_TIMES, ALL_SEASONS),
)
SEEN = ("sun", "rain", "snow", "moon", "sky", "bird")

# Always in training: the reference's probe pairs and a few sentences that state the world.
FIXED_NORMAL: tuple[Pair, ...] = (
    ("ruby is a boy succulent plant.", "winy is a girl succulent plant."),
    ("winy is a girl succulent plant.", "ruby is a boy succulent plant."),
    ("winy feels the soft morning air.", "she is calm and looks at the window."),
    ("ruby and winy live in one pot.", "the pot is by the window."),
    ("ruby and winy are good friends.", "they grow together in the pot."),
    ("ruby is red and winy is green.", "they live in the pot by the window."),
)
FIXED_QA: tuple[Pair, ...] = (
    ("can you bloom, winy?", "sometimes i bloom white flowers."),
    ("can you bloom, ruby?", "no, i am red and i do not bloom."),
    ("how many days do you grow in this pot?", "i grow for many days with my friend."),
    ("why is ruby so red?", "ruby is red because he likes the sun."),
    ("why is winy so green?", "winy is green because she likes the rain."),
)


@dataclass(frozen=True)
class Relation:
    """One kind of fact: entity -> value, its statement, and the templates that ask about it.

    `yes_no` templates are asked once per value in `probes`; the answer is "yes, " when the probe
    is the entity's value and "no, " otherwise, followed by the statement either way.
    """

    name: str
    facts: dict[str, str]
    statement: str
    wh: tuple[str, ...] = ()
    yes_no: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()


COLORS = ("red", "green", "brown", "yellow", "white", "blue")
TIMES_OF_COMING = (
    "in the morning",
    "in the evening",
    "at night",
    "in spring",
    "in summer",
    "in autumn",
    "in winter",
)
RELATIONS = (
    Relation(
        "color",
        {
            "ruby": "red",
            "winy": "green",
            "the pot": "brown",
            "the sun": "yellow",
            "the moon": "white",
            "the sky": "blue",
            "the snow": "white",
            "the soil": "brown",
            "the bird": "blue",
        },
        "{e} is {v}.",
        ("what color is {e}?", "what is the color of {e}?", "which color does {e} have?"),
        ("is {e} {v}?",),
        COLORS,
    ),
    Relation(
        "when",
        {
            "the sun": "in the morning",
            "the moon": "at night",
            "the rain": "in spring",
            "the snow": "in winter",
            "the wind": "in autumn",
            "the bird": "in summer",
        },
        "{e} comes {v}.",
        ("when does {e} come?", "when does {e} come to the window?"),
        ("does {e} come {v}?",),
        TIMES_OF_COMING,
    ),
    Relation(
        "where",
        {
            "ruby": "in the pot",
            "winy": "in the pot",
            "the pot": "by the window",
            "the sun": "in the sky",
            "the moon": "in the sky",
            "the soil": "in the pot",
            "the bird": "by the window",
        },
        "{e} is {v}.",
        ("where is {e}?", "where can i see {e}?"),
        ("is {e} {v}?",),
        ("in the pot", "by the window", "in the sky"),
    ),
    Relation(
        "gender",
        {"ruby": "boy", "winy": "girl"},
        "{e} is a {v}.",
        ("is {e} a boy or a girl?", "is {e} a girl or a boy?"),
        ("is {e} a {v}?",),
        ("boy", "girl"),
    ),
    Relation(
        "kind",
        {"ruby": "succulent plant", "winy": "succulent plant"},
        "{e} is a {v}.",
        ("what is {e}?", "what kind of plant is {e}?"),
        ("is {e} a succulent?",),
        ("succulent plant",),
    ),
    Relation(
        "home",
        {"ruby": "the pot", "winy": "the pot"},
        "{e} lives in {v} by the window.",
        ("where does {e} live?", "where is the home of {e}?", "what is the home of {e}?"),
    ),
    Relation(
        "friend",
        {"ruby": "winy", "winy": "ruby"},
        "{v} is the friend of {e}.",
        ("who is the friend of {e}?", "who lives with {e}?", "who grows with {e}?"),
    ),
    Relation(
        "likes",
        {"ruby": "sun", "winy": "rain"},
        "{e} likes the {v}.",
        ("what does {e} like?", "what does {e} like most?"),
        ("does {e} like the {v}?",),
        ("sun", "rain", "snow", "moon", "wind"),
    ),
    Relation(
        "bloom",
        {"ruby": "does not bloom", "winy": "blooms white flowers"},
        "{e} {v}.",
        ("what flowers does {e} have?",),
        ("does {e} bloom?", "can {e} bloom?"),
        ("blooms white flowers",),
    ),
    Relation(
        "trait",
        {"ruby": "brave", "winy": "kind"},
        "{e} is {v}.",
        ("what is {e} like?", "what kind of friend is {e}?"),
        ("is {e} {v}?",),
        ("brave", "kind", "shy"),
    ),
    Relation(
        "size",
        {"ruby": "small", "winy": "tall"},
        "{e} is {v}.",
        ("is {e} small or tall?", "how tall is {e}?"),
        ("is {e} {v}?",),
        ("small", "tall"),
    ),
    Relation(
        "leaves",
        {"ruby": "round", "winy": "long"},
        "{e} has {v} leaves.",
        ("what leaves does {e} have?", "what are the leaves of {e} like?"),
        ("does {e} have {v} leaves?",),
        ("round", "long"),
    ),
    Relation(
        "age",
        {"ruby": "three", "winy": "two"},
        "{e} knows {v} winters.",
        ("how many winters does {e} know?", "how old is {e}?"),
        ("does {e} know {v} winters?",),
        ("two", "three"),
    ),
    Relation(
        "sleep",
        {"ruby": "in the pot", "winy": "in the pot"},
        "{p} sleeps with {o} in the pot.",
        ("where does {e} sleep?",),
        ("does {e} sleep {v}?",),
        ("in the pot", "on the window"),
    ),
    Relation(
        "warmth",
        {
            "the sun": "warm",
            "the snow": "cold",
            "the wind": "cold",
            "the soil": "warm",
            "the moon": "cold",
            "the pot": "warm",
        },
        "{e} is {v}.",
        ("is {e} warm or cold?", "how does {e} feel?"),
        ("is {e} {v}?",),
        ("warm", "cold"),
    ),
)
# Sophia as an ordinary plant (world "with_sophia"): every value is a word the standard world
# already says, so both worlds have one vocabulary and an embeddings file maps onto either.
SOPHIA_FACTS = {
    "color": "yellow", "where": "in the pot", "gender": "girl", "kind": "succulent plant",
    "home": "the pot", "friend": "winy", "likes": "moon", "bloom": "does not bloom",
    "trait": "shy", "size": "small", "leaves": "long", "age": "two", "sleep": "in the pot",
}
SOPHIA_NORMAL: tuple[Pair, ...] = (
    ("sophia is a girl succulent plant.", "she lives with ruby and winy in the pot."),
    ("sophia is yellow and shy.", "she is small and likes the moon."),
)
# World "garden": the facts of its six more plants, one row each (ruby's and winy's are RELATIONS'
# own). Every value a yes/no question probes is held by one plant and not by another, so the
# world teaches "yes" and "no" for each; some plants are cacti, so "is X a succulent?" has both
# answers too. Each lives in the pot and sleeps there; its friend is OTHER's.
GARDEN_ROWS = ("color", "where", "gender", "kind", "likes", "bloom", "trait", "size", "leaves", "age")
GARDEN_PLANTS = {
    "lily": ("white", "by the window", "girl", "succulent plant", "moon", "blooms white flowers",
             "shy", "small", "round", "two"),
    "jade": ("green", "in the pot", "boy", "succulent plant", "sun", "does not bloom",
             "brave", "tall", "long", "three"),
    "aloe": ("blue", "by the window", "girl", "cactus", "snow", "blooms white flowers",
             "kind", "tall", "long", "three"),
    "pip": ("red", "in the pot", "boy", "cactus", "rain", "does not bloom",
            "shy", "small", "round", "two"),
    "momo": ("yellow", "by the window", "girl", "succulent plant", "wind", "blooms white flowers",
             "brave", "small", "long", "three"),
    "kiki": ("brown", "in the pot", "boy", "cactus", "moon", "does not bloom",
             "kind", "tall", "round", "two"),
}
GARDEN = tuple(GARDEN_PLANTS)  # world "garden": ruby and winy among these six
GARDEN_FACTS = {
    **{relation: {name: row[k] for name, row in GARDEN_PLANTS.items()}
       for k, relation in enumerate(GARDEN_ROWS)},
    "home": dict.fromkeys(GARDEN, "the pot"),
    "friend": {name: OTHER[name] for name in GARDEN},
    "sleep": dict.fromkeys(GARDEN, "in the pot"),
}
# World "garden": "who is {e}?" (the article's probe "who is winy?") asked of every plant, answered
# by what it is.
GARDEN_WH = {"kind": ("who is {e}?",)}
# World "garden": one more relation, a plant's mood ("how calm is winy?", the article's probe, is
# one of its questions); winy is calm, as the stories say when she feels the soft morning air.
GARDEN_RELATIONS = (
    Relation(
        "mood",
        {"ruby": "happy", "winy": "calm", "lily": "calm", "jade": "happy", "aloe": "calm",
         "pip": "happy", "momo": "calm", "kiki": "happy"},
        "{e} is {v}.",
        ("how calm is {e}?", "what mood is {e} in?"),
        ("is {e} {v}?",),
        ("calm", "happy"),
    ),
)
# The QA phrasings a world can ask (`qa_phrasings`). "base" (the default) is RELATIONS' own
# templates; "extended" adds the two tables below, asked in training and held out like the others
# (see succulent_world.split_qa).
QA_PHRASINGS = ("base", "extended")
# "extended": one more wh-question per relation, "tell me ...".
EXTENDED_WH = {
    "color": ("tell me the color of {e}.",),
    "when": ("tell me when {e} comes.",),
    "where": ("tell me where {e} is.",),
    "gender": ("tell me if {e} is a boy or a girl.",),
    "kind": ("tell me what kind of plant {e} is.",),
    "home": ("tell me where {e} lives.",),
    "friend": ("tell me who the friend of {e} is.",),
    "likes": ("tell me what {e} likes.",),
    "bloom": ("tell me what flowers {e} has.",),
    "trait": ("tell me what friend {e} is.",),
    "size": ("tell me how tall {e} is.",),
    "leaves": ("tell me what leaves {e} has.",),
    "age": ("tell me how many winters {e} knows.",),
    "sleep": ("tell me where {e} sleeps.",),
    "warmth": ("tell me how {e} feels.",),
}
# "extended": a second yes/no phrasing of every statement with a value ("do you think ruby is
# red?"): with one yes/no template per relation, holding out an entity's only "yes" cell would
# leave the model no way to learn that "yes" follows from the fact rather than from the template.
THINK_TEMPLATE = "do you think {statement}?"
