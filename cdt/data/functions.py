"""The embedded `functions` corpus: procedurally generated functions and requests that call them.

Each record is a function definition nobody wrote by hand (a name, typed arguments with
descriptions, required and optional ones, enums, arrays and nested objects), a request in one of
many phrasings, and the call that answers it. Values are copied from the request or transformed
(number words to digits, yes/no to booleans, synonyms to enum members, spoken lists to arrays); an
optional argument the request does not mention is null. Requests may hold characters outside the
model's alphabet (accented names, other scripts), which the vocabulary reads as its fallback
character (`cdt.vocab.FALLBACK`), so the model learns to copy them too.

Function names are split, not requests: a validation function's name never occurs in training, so
validation measures calls to functions the model never saw. Deterministic by seed, no hash().
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import replace

from cdt.data.toolcalls import ToolCall, number_words

VERBS = ("get", "find", "calculate", "compute", "fetch", "search", "list", "create", "update", "check", "estimate",
         "convert", "analyze", "predict", "lookup", "count", "track", "plan", "book", "send", "record", "compare",
         "measure", "rank", "filter", "summarize", "register", "cancel", "schedule", "validate", "generate")
NOUNS = ("harvest yield", "tide level", "orbit period", "ticket price", "river flow", "crop rotation", "bus route",
         "gallery hours", "gym session", "loan payment", "paint coverage", "fuel usage", "wind speed", "bird count",
         "book loan", "parcel status", "tax bracket", "voter turnout", "coffee order", "wine pairing",
         "hotel room", "car rental", "exam score", "recipe cost", "plant growth", "star brightness", "rent split",
         "water usage", "noise level", "trail length", "ferry schedule", "dog breed", "chess rating",
         "song tempo", "film rating", "lake depth", "salary band", "package weight", "dose amount", "bike lane",
         "solar output", "room booking", "event seats", "cargo volume", "quiz result", "train delay",
         "storm track", "market share", "vaccine stock", "glacier melt", "poll result", "shelf space",
         "pixel density", "battery life", "league table", "sensor reading", "patient record", "invoice total",
         "shipping cost", "mortgage rate", "crowd size", "ocean temperature", "forest cover", "traffic volume")
# compound argument names, as real functions have them (start_location, player_name); a request may say
# the whole name or only its base ("location") where no other argument shares that base
COMPOUND_SHARE = 0.35
QUALIFIERS = ("start", "end", "min", "max", "target", "initial", "final", "total", "home", "away", "first",
              "second", "new", "current", "default", "user", "base", "primary", "num")
SUFFIXES = {"string": ("name", "id", "code", "type", "input"), "integer": ("count", "id", "value", "amount"),
            "number": ("value", "amount"), "enum": ("type", "option"), "array": ("list",)}
MODULES = ("utils", "service", "api", "data", "core", "tools", "client", "engine", "helper", "db")
SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "dor", "sa", "li", "ta", "mon", "be", "ri", "zu", "fe", "no", "qua",
             "el", "an", "tor", "is", "ba", "cu", "dri", "po", "ne", "ho", "ju", "wa", "yo", "xi")
WORDS = ("north", "river", "silver", "maple", "harbor", "summit", "coral", "ember", "willow", "granite", "meadow",
         "falcon", "cedar", "atlas", "nova", "pioneer", "orchid", "lumen", "quartz", "delta", "aurora", "bamboo")
# names and places outside a plain ASCII alphabet: the model sees their unknown characters as the fallback
FOREIGN = ("José", "Zürich", "Kraków", "São Paulo", "Malmö", "Ærø", "Москва", "東京", "Αθήνα", "Łódź", "Señor Pérez",
           "Dvořák", "Nguyễn", "İzmir", "Ōsaka", "Café Noël")
PLACES = ("Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Austin", "Denver", "Boston", "Dublin", "Madrid", "Seoul",
          "Nairobi", "Quito", "Perth", "Calgary", "New York", "San Diego", "Cape Town", "Hong Kong", "Buenos Aires",
          "Texas", "Ontario", "Bavaria", "Kenya", "Peru", "Norway", "Vietnam", "Chile", "Morocco", "Iceland")
PEOPLE = ("Ana Silva", "Ben Okafor", "Chloe Martin", "Dev Patel", "Elena Rossi", "Farid Haddad", "Grace Liu",
          "Hugo Berg", "Ines Costa", "Jonas Weber", "Lena Novak", "Marco Bianchi", "Nadia Karim", "Omar Aziz",
          "Priya Shah", "Rosa Diaz", "Tara Singh", "Wei Zhang", "Yusuf Demir", "Zoe Adams")
# everyday words and phrases a string value may be, lower case as often as not
PHRASES = ("water", "human", "ice", "steam", "iron", "gold price", "red wine", "heart rate", "rainforest",
           "green tea", "blood pressure", "solar panel", "mountain bike", "electric car", "brown bear", "oak tree",
           "jazz album", "city center", "main street", "carbon dioxide", "sea level", "bus station",
           "vaporization", "photosynthesis", "inflation", "mortgage", "algebra", "chess", "tennis", "pasta")
UNITS = {"integer": ("", "", "", " units", " kg", "m", " km", " miles", " years", " days", " people", " USD", "K"),
         "number": ("", "", "", " kg", " m/s", " liters", " hours", "C", " g")}
ITEMS = ("eggs", "flour", "milk", "apples", "rice", "tomatoes", "steel", "copper", "python", "rust", "jazz", "blues",
         "cotton", "wool", "oak", "pine", "salmon", "tuna", "basil", "mint", "red", "blue", "green", "gold")


class Kind:
    """A kind of argument: the names it goes by, its type and how a request says its value."""

    def __init__(self, names, type_, value, phrases=("with {k} {v}", "{k} {v}", "{k} of {v}", "{k}: {v}",
                 "and {k} {v}", "using {k} {v}", "where {k} is {v}", "{k} set to {v}", "with a {k} of {v}",
                 "the {k} is {v}", "given {k} {v}", "for {k} {v}"), **extra):
        self.names, self.type, self.value, self.phrases, self.extra = names, type_, value, phrases, extra


def _word(rng):  # a made-up word: copied, never memorised
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def _string(rng):
    r = rng.random()
    if r < 0.25:
        v = rng.choice(PHRASES)
        return v.capitalize() if rng.random() < 0.3 else v
    if r < 0.4:
        return _word(rng).capitalize() + ("" if rng.random() < 0.5 else " " + _word(rng).capitalize())
    if r < 0.5:
        return rng.choice(WORDS) + ("" if rng.random() < 0.5 else " " + rng.choice(WORDS))
    if r < 0.58:
        return rng.choice(FOREIGN)
    if r < 0.66:  # strings that hold digits and dashes: a season, a ticker, a code
        y = rng.randint(1950, 2030)
        return rng.choice((f"{y}-{y + 1}", f"{y}-{str(y + 1)[2:]}", _word(rng).upper()[:4],
                           f"{_word(rng)[:2].upper()}-{rng.randint(100, 999)}"))
    return rng.choice(PLACES + PEOPLE)


def _quoted(rng):
    v = _string(rng)
    return v, (f"'{v}'" if rng.random() < 0.3 else v)


def _int(rng):
    r = rng.random()
    n = rng.randint(0, 20) if r < 0.3 else rng.randint(21, 999) if r < 0.7 else rng.randint(1000, 99999)
    if rng.random() < 0.08:
        n = -n
    if 0 <= n < 100 and rng.random() < 0.3:
        return n, number_words(n)
    said = f"{n:,}" if abs(n) >= 1000 and rng.random() < 0.5 else str(n)  # 12,000 is 12000
    if n > 0 and rng.random() < 0.1:
        return n, "$" + said  # $2,000,000 is 2000000
    return n, said + rng.choice(UNITS["integer"])  # 5m, 300K, 45 kg: the unit is not the value


def _float(rng):
    digits = rng.choice((1, 1, 2, 2, 3))
    v = round(rng.uniform(0, 10 ** rng.randint(0, 3)), digits)
    return v, ("$" + str(v)) if rng.random() < 0.1 else str(v) + rng.choice(UNITS["number"])


def _percent(rng):
    p = rng.randint(1, 99)
    return p / 100, rng.choice((f"{p}%", f"{p} percent"))


def _bool(rng, name):
    v = rng.random() < 0.5
    words = name.replace("_", " ")
    said = rng.choice((f"with {words}", f"{words} on", f"{words} enabled", f"and {words}")) if v else \
        rng.choice((f"without {words}", f"no {words}", f"{words} off", f"{words} disabled"))
    return v, said


def _year(rng):
    y = rng.randint(1800, 2035)
    return y, str(y)


def _list(rng, item):
    n = rng.randint(1, 4)
    values = [item(rng) for _ in range(n)]
    said = [s for _, s in values]
    text = said[0] if n == 1 else ", ".join(said[:-1]) + rng.choice((" and ", ", ")) + said[-1]
    if rng.random() < 0.3:
        text = "[" + ", ".join(said) + "]"
    return [v for v, _ in values], text


KINDS = (
    Kind(("location", "city", "place", "destination", "origin", "region"), "string", _quoted,
         ("in {v}", "for {v}", "at {v}", "near {v}", "{k} {v}", "with {k} {v}", "to {v}", "from {v}")),
    Kind(("name", "title", "label", "author", "artist", "owner", "company", "team", "player", "customer",
          "product", "brand", "category", "genre", "species", "topic", "keyword", "query"), "string", _quoted),
    Kind(("count", "quantity", "number", "limit", "amount", "size", "days", "hours", "minutes", "n", "age",
          "max_results", "width", "height", "length", "depth", "base", "radius", "distance", "duration", "level",
          "page", "rank", "score", "floor", "guests", "seats"), "integer", _int),
    Kind(("year", "start_year", "end_year", "season", "since"), "integer", _year,
         ("in {v}", "for {v}", "{k} {v}", "from {v}", "since {v}", "of {v}")),
    Kind(("price", "rate", "ratio", "weight", "temperature", "speed", "mass", "volume", "budget", "threshold",
          "interest", "growth", "factor", "velocity", "acceleration"), "number", _float),
    Kind(("discount", "tax_rate", "interest_rate", "probability", "share", "tip"), "number", _percent,
         ("{k} {v}", "with {k} of {v}", "at {v}", "{k}: {v}")),
    Kind(("include_details", "verbose", "detailed", "recursive", "public", "urgent", "refundable", "organic",
          "include_history", "use_cache", "round_up", "sort_descending", "notify", "dry_run"), "boolean", None,
         ("{v}",)),
    Kind(("unit", "units"), "enum", None, ("in {v}", "{k} {v}", "using {v}"),
         choices=(("celsius", "fahrenheit", "kelvin"), ("km", "miles"), ("kg", "lb"), ("metric", "imperial"))),
    Kind(("sort", "order", "mode", "priority", "format", "status", "method", "level_name"), "enum", None,
         choices=(("asc", "desc"), ("low", "medium", "high"), ("json", "csv", "xml"), ("open", "closed"),
                  ("fast", "balanced", "accurate"), ("daily", "weekly", "monthly"))),
    Kind(("items", "tags", "ingredients", "keywords", "cities", "names", "colors", "languages", "materials"),
         "array", lambda rng: _list(rng, lambda r: (lambda v: (v, v))(rng.choice(ITEMS + WORDS))),
         ("{k} {v}", "with {k} {v}", "for {v}", "{k}: {v}", "of {v}"), item="string"),
    Kind(("values", "numbers", "scores", "ids", "sizes", "points"), "array",
         lambda rng: _list(rng, lambda r: (lambda n: (n, str(n)))(r.randint(-50, 999))),
         ("{k} {v}", "of {v}", "{k}: {v}", "with {k} {v}", "for {v}"), item="integer"),
)


def _range(rng):
    lo = rng.randint(0, 500)
    hi = lo + rng.randint(1, 500)
    return {"min": lo, "max": hi}, rng.choice((f"from {lo} to {hi}", f"between {lo} and {hi}", f"{lo}-{hi}"))


def _place(rng):
    city, country = rng.choice(PLACES[:20]), rng.choice(PLACES[20:])
    return {"city": city, "country": country}, rng.choice((f"{city}, {country}", f"{city} in {country}"))


def _dimensions(rng):
    w, h = rng.randint(1, 999), rng.randint(1, 999)
    return {"width": w, "height": h}, rng.choice((f"{w} by {h}", f"{w}x{h}", f"{w} wide and {h} high"))


# nested objects: their fields, and how a request says the whole value
OBJECTS = (
    Kind(("range", "limits", "bounds", "price_range"), "object", _range, ("{k} {v}", "with {k} {v}", "{k}: {v}"),
         fields=(("min", "integer"), ("max", "integer"))),
    Kind(("address", "place_info", "where"), "object", _place, ("{k} {v}", "at {v}", "{k}: {v}"),
         fields=(("city", "string"), ("country", "string"))),
    Kind(("dimensions", "frame", "canvas"), "object", _dimensions, ("{k} {v}", "of {v}", "{k}: {v}"),
         fields=(("width", "integer"), ("height", "integer"))),
)
KINDS = KINDS + OBJECTS


def _function(rng) -> tuple[str, str, list]:
    """A function: (name, what it does in words, [(kind, argument name, optional, choices, base name)])."""
    verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
    words = [verb] + noun.split()
    style = rng.random()
    if style < 0.55:
        name = "_".join(words)
    elif style < 0.85:
        name = rng.choice(MODULES + tuple(noun.split())) + "." + "_".join(words)
    else:
        name = words[0] + "".join(w.capitalize() for w in words[1:])
    args, used = [], set()
    for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6))):
        kind = rng.choice(KINDS)
        base = rng.choice(kind.names)
        arg = base
        if kind.type in SUFFIXES and "_" not in base and rng.random() < COMPOUND_SHARE:  # start_location
            arg = f"{rng.choice(QUALIFIERS)}_{base}" if rng.random() < 0.6 else f"{base}_{rng.choice(SUFFIXES[kind.type])}"
        if arg in used:
            continue
        used.add(arg)
        choices = rng.choice(kind.extra["choices"]) if "choices" in kind.extra else ()
        optional = bool(args) and kind.type != "object" and rng.random() < 0.3  # a scaffolded object is never null
        args.append((kind, arg, optional, choices, base))
    return name, f"{verb} the {noun}", args


def schema_of(name: str, args: list):
    """The `cdt.scaffold.Schema` of a generated function, with the slot budgets of `with_type_budgets`."""
    from cdt.scaffold.schema import Field, Schema  # the scaffold package reads cdt.data: imported when used

    fields = []
    for kind, arg, optional, choices, _ in args:
        if kind.type == "enum":
            fields.append(Field(arg, "enum", tuple(choices), optional))
        elif kind.type == "array":
            fields.append(Field(arg, "array", (), optional, items=Field("item", kind.extra["item"])))
        elif kind.type == "object":
            fields.append(Field(arg, "object", (), optional, fields=tuple(Field(k, t) for k, t in kind.extra["fields"])))
        else:
            fields.append(Field(arg, kind.type, (), optional))
    return with_type_budgets(Schema(name, tuple(fields)))


def with_type_budgets(schema):
    """`schema` with the slot sizes this corpus trains: a string 20 positions, an integer 6, a number 8, an
    array room for 4 items of half those sizes. A budget the schema sets itself (maxLength, a bounded
    integer, a date format, an enum) is kept. `cdt bench bfcl` sizes BFCL's slots the same way."""
    from cdt.scaffold.schema import Schema

    def sized(f, scale: int = 1):
        if f.type == "object":
            return replace(f, fields=tuple(sized(g, scale) for g in f.fields))
        if f.type == "array":
            item = sized(f.items, 2)
            width = item.slot + 2 if item.quoted_by_scaffold else item.slot
            return replace(f, items=item, budget=f.budget or 2 + 4 * width + 2 * 3)
        keep = f.budget or f.format or (f.type == "integer" and None not in (f.minimum, f.maximum))
        if keep or f.type not in BUDGETS:
            return f
        return replace(f, budget=BUDGETS[f.type] // scale)

    return Schema(schema.tool, tuple(sized(f) for f in schema.fields))


BUDGETS = {"string": 20, "integer": 6, "number": 8}  # slot positions: every generated value fits
OPENERS = ("{Do}", "Please {do}", "Can you {do}", "I need to {do}", "Help me {do}", "Could you {do}",
           "I want to {do}", "{Do} for me", "Quick: {do}", "We should {do}", "I'd like to {do}",
           "What is the {noun}", "Tell me the {noun}", "Show me the {noun}", "Get me the {noun}",
           "Find the {noun}", "How about the {noun}")  # the last ones name what is wanted, not the verb
QUESTIONS = ("Can", "Could", "What", "How")
UNNAMED = ("{v}", "for {v}", "of {v}", "on {v}", "about {v}")  # a value said without its argument's name
ORDERED_SHARE = 0.5  # requests that say their values in the function's order, some without names


def _noun(doing: str) -> str:
    """What a function works on: "tide level" of "measure the tide level"."""
    return doing.split(" the ", 1)[1]


def _request(rng, doing: str, args: list, say_verb: bool = False) -> tuple[str, dict]:
    """A request and the call's values. Most requests name each argument whose type another argument
    shares; a request in the function's order (ORDERED_SHARE) may leave names out, as people do ("directions
    from Sydney to Melbourne"), and the values then fill the arguments of their type in order."""
    values, phrases = {}, []
    types = [kind.type for kind, *_ in args]
    bases = [base for *_, base in args]
    ordered, skipped = rng.random() < ORDERED_SHARE, set()
    for kind, arg, optional, choices, base in args:
        if optional and rng.random() < 0.5:
            values[arg] = None  # not mentioned: the call leaves it null
            skipped.add(kind.type)  # a later value of its type must then be named
            continue
        words = arg.replace("_", " ")
        if base != arg and bases.count(base) == 1 and rng.random() < 0.5:
            words = base.replace("_", " ")  # "location" for start_location, where no other argument is one
        if kind.type == "boolean":
            v, said = _bool(rng, words)
        elif kind.type == "enum":
            v = rng.choice(choices)
            said = v
        else:
            v, said = kind.value(rng)
        values[arg] = v
        keyed = [p for p in kind.phrases if "{k}" in p or kind.type == "boolean"]
        unnamed = [p for p in kind.phrases if "{k}" not in p] or list(UNNAMED)
        # without the name only where that is unambiguous: no other argument has the type, or the order says it
        in_order = ordered and kind.type not in skipped
        bare = kind.type != "boolean" and (types.count(kind.type) == 1 or in_order) and rng.random() < 0.5
        phrases.append(rng.choice(unnamed if bare else keyed).format(k=words, v=said))
    if not ordered:
        rng.shuffle(phrases)
    opener = rng.choice([o for o in OPENERS if "{noun}" not in o] if say_verb else OPENERS)
    head = opener.replace("{Do}", doing[0].upper() + doing[1:]).replace("{do}", doing).replace("{noun}", _noun(doing))
    joined = ""
    for i, p in enumerate(phrases):
        joined += (" " if i == 0 else rng.choice((", ", " ", " and ", "; "))) + p
    end = "?" if opener.startswith(QUESTIONS) else rng.choice((".", "", "!", "."))
    return head + joined + end, values


OFFERED_SHARE = 0.3  # records offered several tools (the named one and 1 to 3 others from its split)


def with_tools(request: str, names) -> str:
    """A request as the model reads it when several tools are offered: their names after it, in order."""
    return request if len(names) < 2 else f"{request} (tools: {', '.join(names)})"


def generate(n: int, seed: int = 0, functions: int = 3000) -> list[ToolCall]:
    """n records over a pool of `functions` generated functions (several requests per function)."""
    rng = random.Random(seed)
    pool, names = [], set()
    while len(pool) < functions:
        name, doing, args = _function(rng)
        if name not in names and args:
            names.add(name)
            pool.append((name, doing, args, schema_of(name, args)))
    sides = {False: [p[0] for p in pool if not is_validation(p[0])], True: [p[0] for p in pool if is_validation(p[0])]}
    out = []
    noun = {p[0]: _noun(p[1]) for p in pool}
    for i in range(n):
        name, doing, args, schema = pool[rng.randrange(len(pool))]
        offered = ()
        if rng.random() < OFFERED_SHARE:
            others = [t for t in rng.sample(sides[is_validation(name)], 4) if t != name][: rng.randint(1, 3)]
            offered = tuple(rng.sample([name, *others], len(others) + 1))
        # the noun alone would not tell two offered tools on one subject apart: then the verb is said
        prompt, values = _request(rng, doing, args, say_verb=any(noun[t] == noun[name] for t in offered if t != name))
        out.append(ToolCall(id=f"fn-{seed}-{i}", prompt=with_tools(prompt, offered), tool=name, arguments=values,
                            schema=schema, offered=offered))
    return out


def is_validation(tool: str, val_percent: int = 10) -> bool:
    """Split by the function's name without its module and word separators (`api.get_tide_level`,
    `get_tide_level` and `getTideLevel` fall on one side): a validation function is never seen in training."""
    core = re.sub(r"[^a-z]", "", tool.rsplit(".", 1)[-1].lower())
    return zlib.crc32(core.encode()) % 100 < val_percent
