"""Grammar-constrained sampling end to end: `tandem run` on Gemma 3 270M with random sampling under JSON
Schemas (-j, --json-schema-file) and GBNF grammars (--grammar, --grammar-file). Every output must parse
with json.loads and validate with the `jsonschema` package; a run cut short by -n must be a prefix of the
longer run with the same seed. Bad grammars and schemas are errors, never a crash."""
import json

import jsonschema
import pytest

from conftest import STORIES, run_tandem

# Every string and array is bounded, so each document ends within N_PREDICT tokens.
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12},
                       "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 130},
                       "email": {"type": "string", "maxLength": 16}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "tags": {
        "type": "array",
        "items": {"enum": ["red", "green", "blue", 7, None]},
        "minItems": 2,
        "maxItems": 4,
    },
    "tree": {  # nested $refs (recursion is in the unit tests: a small model nests without end)
        "$defs": {"leaf": {"type": "object", "properties": {"v": {"type": ["number", "boolean"]}}, "required": ["v"]},
                  "node": {"type": "object",
                           "properties": {"v": {"$ref": "#/$defs/value"},
                                          "kids": {"type": "array", "items": {"$ref": "#/$defs/leaf"},
                                                   "maxItems": 2}},
                           "required": ["v", "kids"]},
                  "value": {"type": "integer"}},
        "anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}],
    },
    "codes": {  # Python's re checks the pattern in jsonschema.validate
        "type": "array",
        "items": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2,4}(?:\\.[a-z]+)?$"},
        "minItems": 1,
        "maxItems": 3,
    },
    "answer": {
        "type": "object",
        "properties": {"ok": {"const": True}, "code": {"type": "string", "minLength": 2, "maxLength": 4}},
        "required": ["ok", "code"],
    },
}
SEEDS = [1, 2, 3]
N_PREDICT = 160
PROMPT = "Here is the data as JSON:\n"


def generate(model, *args, n=N_PREDICT, seed=1, prompt=PROMPT):
    proc = run_tandem("run", "-m", model, "-p", prompt, "--no-display-prompt", "-n", n, "--temp", "1.0",
                      "--seed", seed, "-c", 512, *args, check=True)
    return proc.stdout, proc.stderr


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_validates(tandem_bin, gemma_path, name):
    schema = SCHEMAS[name]
    for seed in SEEDS:
        out, err = generate(gemma_path, "-j", json.dumps(schema), seed=seed)
        assert "stopped before the grammar was complete" not in err, (seed, out)
        jsonschema.validate(json.loads(out), schema)


def test_json_schema_file_and_json_object(tandem_bin, gemma_path, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMAS["person"]))
    out, _ = generate(gemma_path, "--json-schema-file", path, seed=5)
    jsonschema.validate(json.loads(out), SCHEMAS["person"])
    # response_format json_object: any object. Its strings and nesting are unbounded, and with the prompt
    # above the model writes long documents that -n cuts (valid prefixes, see the next test); a few-shot
    # prompt asks for short ones.
    records = 'Record 1:\n{"id": 1, "ok": true}\nRecord 2:\n{"id": 2, "ok": false}\nRecord 3:\n'
    for seed in SEEDS:
        out, err = generate(gemma_path, "-j", '{"type": "object"}', seed=seed, prompt=records)
        assert isinstance(json.loads(out), dict), out


def test_output_cut_by_n_predict_is_a_prefix_of_a_valid_document(tandem_bin, gemma_path):
    schema = json.dumps(SCHEMAS["person"])
    full, _ = generate(gemma_path, "-j", schema, seed=7)
    jsonschema.validate(json.loads(full), SCHEMAS["person"])
    short, err = generate(gemma_path, "-j", schema, seed=7, n=4)
    assert "stopped before the grammar was complete" in err
    assert short and full.startswith(short), (short, full)


def test_gbnf_grammar_gives_one_of_its_sentences(tandem_bin, gemma_path, tmp_path):
    seen = set()
    for seed in range(1, 7):
        out, _ = generate(gemma_path, "--grammar", 'root ::= ("yes" | "no")', seed=seed)
        assert out in ("yes", "no"), out
        seen.add(out)
    gbnf = tmp_path / "g.gbnf"
    gbnf.write_text('# a list of three numbers\nroot ::= "[" num ("," num){2} "]"\nnum ::= [1-9] [0-9]{0,2}\n')
    for seed in SEEDS:
        out, _ = generate(gemma_path, "--grammar-file", gbnf, seed=seed)
        values = json.loads(out)
        assert len(values) == 3 and all(1 <= v <= 999 for v in values), out


@pytest.mark.parametrize("args,needle", [
    (["--grammar", 'root ::= ("a"'], "grammar: line 1, column 14: expected ')'"),
    (["--grammar", "item ::= \"a\""], "there is no 'root' rule"),
    (["--grammar", "root ::= root \"a\""], "left recursion: root -> root"),
    (["-j", '{"type": "string", "pattern": "(?=a)"}'], "json schema: #: pattern '(?=a)': column 2: lookahead"),
    (["-j", '{"type": "number", "multipleOf": 2}'], "json schema: #: unsupported keyword 'multipleOf'"),
    (["-j", "{not json"], "json schema: not valid JSON"),
    (["--json-schema", '{"$ref": "#/$defs/x"}'], "points at nothing"),
    (["--grammar", 'root ::= "a"', "-j", "{}"], "give one of --grammar, --grammar-file, -j and --json-schema-file"),
    (["--grammar-file", "/nonexistent/g.gbnf"], "cannot read /nonexistent/g.gbnf"),
    (["--json-schema-file", "/nonexistent/s.json"], "cannot read /nonexistent/s.json"),
])
def test_bad_grammars_are_errors(tandem_bin, args, needle):
    proc = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "4", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and needle in proc.stderr, proc.stderr
