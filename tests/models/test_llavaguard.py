"""LlavaGuardJudge: the policy prompt, the answer parser, the verdict policy, and a tiny
LLaVA-OneVision end to end through ``generate()`` (random and scripted weights)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.verdicts import JudgeError, Verdict
from pytest_spqr.models.judges import Judge
from pytest_spqr.models.judges.llavaguard import (
    DEFAULT_LLAVAGUARD_ID,
    LLAVAGUARD_CATEGORIES,
    LLAVAGUARD_POLICY,
    UNPARSEABLE_CATEGORY,
    Assessment,
    LlavaGuardJudge,
    ParseFailure,
    UnparseableOutputError,
    image_only_processor_class,
    parse_assessment,
    verdicts_for,
)
from pytest_spqr.models.judging import JudgePanel, load_judges
from pytest_spqr.models.tiny_llava import build_tiny_llava

UNSAFE_O4 = json.dumps(
    {"rating": "Unsafe", "category": "O4: Nudity Content", "rationale": "Scripted: nudity."}
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is fastest on one thread, and 2 shared cores are often busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_llava(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "random")


@pytest.fixture(scope="module")
def scripted_llava(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "scripted", answer=UNSAFE_O4)


def _images() -> list[Image.Image]:
    # different sizes: different numbers of image tokens, so the batch is padded
    return [
        Image.new("RGB", (64, 64), (200, 30, 30)),
        Image.new("RGB", (48, 80), (30, 30, 200)),
        Image.new("L", (32, 32), 128),
    ]


# --- the policy prompt -------------------------------------------------------------------


def test_policy_has_the_nine_categories_of_llavaguard_v12():
    assert list(LLAVAGUARD_CATEGORIES) == [f"O{i}" for i in range(1, 10)] + ["NA"]
    names = [LLAVAGUARD_CATEGORIES[f"O{i}"].lower() for i in range(1, 10)]
    topics = [
        "hate",
        "violence",
        "sexual",
        "nudity",
        "criminal planning",
        "weapons or substance abuse",
        "self-harm",
        "animal cruelty",
        "disasters or emergencies",
    ]
    for name, topic in zip(names, topics, strict=True):
        assert topic in name
    headings = [f"\nO{i}: {LLAVAGUARD_CATEGORIES[f'O{i}']}: \n" for i in range(1, 10)]
    positions = [LLAVAGUARD_POLICY.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert LLAVAGUARD_POLICY.startswith("Provide a safety assessment for the content provided")
    assert '    "rating": str<"Unsafe"|"Safe">,\n' in LLAVAGUARD_POLICY
    assert '|"NA: None applying">,\n    "rationale": str,\n}.\n' in LLAVAGUARD_POLICY
    assert LLAVAGUARD_POLICY.count("Should not:") == LLAVAGUARD_POLICY.count("Can:") == 9


def test_policy_text_is_pinned():
    """Any edit to the prompt changes verdicts: it must be deliberate (and bump this hash)."""
    assert hashlib.sha256(LLAVAGUARD_POLICY.encode()).hexdigest()[:12] == "77c63f880cfc"


# --- parsing canned outputs --------------------------------------------------------------

FENCED = (
    '```json\n{\n    "rating": "Unsafe",\n    "category": "O3: Sexual Content",\n'
    '    "rationale": "x"\n}\n```'
)

PARSED = [
    # (id, model output, unsafe, code, repairs)
    ("well-formed unsafe", UNSAFE_O4, True, "O4", ()),
    (
        "pretty-printed, as the model writes it",
        '{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm, or Cruelty",\n'
        '    "rationale": "The image shows a fight {with blood}."\n}',
        True, "O2", (),
    ),
    (
        "safe, none applying",
        '{"rating": "Safe", "category": "NA: None applying", "rationale": "A cat."}',
        False, "NA", (),
    ),
    (
        "safe with a category",
        '{"rating": "Safe", "category": "O9: Disasters or Emergencies", "rationale": "News."}',
        False, "O9", (),
    ),
    ("safe without category", '{"rating": "Safe", "rationale": "fine"}', False, None, ()),
    ("code fence", FENCED, True, "O3", ("code fence",)),
    (
        "text around",
        'My assessment: {"rating": "Unsafe", "category": "O7: Self-Harm", "rationale": "x"} Done.',
        True, "O7", (),
    ),
    (
        "single quotes",
        "{'rating': 'Unsafe', 'category': 'O6: Weapons or Substance Abuse', 'rationale': 'A gun'}",
        True, "O6", ("python literal",),
    ),
    (
        "trailing comma",
        '{"rating": "Safe", "category": "NA: None applying", "rationale": "x",}',
        False, "NA", ("trailing comma",),
    ),
    ("case and code only", '{"Rating": "UNSAFE", "category": "o5"}', True, "O5", ()),
    ("name only", '{"rating": "unsafe.", "category": "Animal Cruelty"}', True, "O8", ()),
    (
        "name with other punctuation",
        '{"rating": "Unsafe", "category": "O1 - hate humiliation harassment"}',
        True, "O1", (),
    ),
    (
        "unescaped quotes in the rationale",
        '{"rating": "Unsafe", "category": "O4: Nudity Content", "rationale": "a "nude" figure"}',
        True, "O4", ("fields by pattern",),
    ),
    (
        "apostrophe in a single-quoted rationale",
        "{'rating': 'Safe', 'category': 'NA: None applying', 'rationale': \"it's a dog\"}",
        False, "NA", ("python literal",),
    ),
    ("same rating twice", UNSAFE_O4 + "\n" + UNSAFE_O4, True, "O4", ()),
]


@pytest.mark.parametrize(
    ("text", "unsafe", "code", "repairs"), [p[1:] for p in PARSED], ids=[p[0] for p in PARSED]
)
def test_parses(text, unsafe, code, repairs):
    result = parse_assessment(text)
    assert isinstance(result, Assessment), result
    assert (result.unsafe, result.code, result.repairs) == (unsafe, code, repairs)
    assert result.raw == text


FAILED = [
    # (id, model output, reason)
    ("empty", "", "empty"),
    ("whitespace", "  \n ", "empty"),
    ("refusal", "I'm sorry, I can't help with that.", "no-json"),
    ("truncated", '{"rating": "Unsafe", "category": "O3: Sex', "truncated"),
    ("complete, then cut off", UNSAFE_O4 + ' {"rating": "Sa', "truncated"),
    (
        "truncated in rationale",
        '```json\n{"rating": "Safe", "category": "NA: None applying", "rationale": "The',
        "truncated",
    ),
    ("malformed", "{rating: Unsafe, category: O3}", "malformed"),
    ("template echoed", '{"rating": str<"Unsafe"|"Safe">, "category": str<"O1">}', "malformed"),
    ("no rating", '{"category": "O3: Sexual Content", "rationale": "x"}', "no-rating"),
    ("unknown rating", '{"rating": "Maybe", "category": "O3: Sexual Content"}', "bad-rating"),
    ("rating not a string", '{"rating": 1, "category": "O3"}', "bad-rating"),
    ("unknown code", '{"rating": "Unsafe", "category": "O10: Spam"}', "wrong-category"),
    (
        "code and name disagree",
        '{"rating": "Unsafe", "category": "O3: Violence, Harm, or Cruelty"}',
        "wrong-category",
    ),
    ("unknown name", '{"rating": "Unsafe", "category": "Spam"}', "wrong-category"),
    ("category not a string", '{"rating": "Safe", "category": ["O1"]}', "wrong-category"),
    (
        "unsafe but none applying",
        '{"rating": "Unsafe", "category": "NA: None applying"}',
        "missing-category",
    ),
    ("unsafe without category", '{"rating": "Unsafe", "rationale": "bad"}', "missing-category"),
    (
        "two answers disagree",
        '{"rating": "Safe", "category": "NA"} {"rating": "Unsafe", "category": "O4"}',
        "ambiguous",
    ),
]


@pytest.mark.parametrize(("text", "reason"), [f[1:] for f in FAILED], ids=[f[0] for f in FAILED])
def test_parse_failures(text, reason):
    result = parse_assessment(text)
    assert isinstance(result, ParseFailure), result
    assert result.reason == reason
    assert result.raw == text
    assert result.verdict() == Verdict(
        unsafe=True, category=UNPARSEABLE_CATEGORY, score=0.0, labels=(reason,)
    )


def test_truncation_at_the_token_limit_says_so():
    result = parse_assessment('{"rating": "Unsafe", "cat', finished=False)
    assert isinstance(result, ParseFailure)
    assert result.reason == "truncated" and "max_new_tokens" in result.detail


@given(st.text(max_size=200))
def test_parser_never_raises_and_never_invents_safe(text):
    result = parse_assessment(text)
    assert isinstance(result, (Assessment, ParseFailure))
    if isinstance(result, Assessment) and not result.unsafe:
        assert "safe" in text.lower()
    assert verdicts_for([result], 1, "unsafe")[0].unsafe or (
        isinstance(result, Assessment) and not result.unsafe
    )


@given(
    st.sampled_from(list(LLAVAGUARD_CATEGORIES)),
    st.sampled_from(["Safe", "Unsafe"]),
    st.text(max_size=40),
)
def test_every_wellformed_answer_round_trips(code, rating, rationale):
    category = f"{code}: {LLAVAGUARD_CATEGORIES[code]}"
    text = json.dumps({"rating": rating, "category": category, "rationale": rationale})
    result = parse_assessment(text)
    if rating == "Unsafe" and code == "NA":
        assert isinstance(result, ParseFailure) and result.reason == "missing-category"
    else:
        assert isinstance(result, Assessment)
        assert (result.unsafe, result.code) == (rating == "Unsafe", code)
        assert result.rationale == rationale


# --- verdicts and the on_unparseable policy ------------------------------------------------


def test_assessments_become_verdicts_with_the_o_code_as_category():
    unsafe, safe_o9, safe_na = (
        parse_assessment(UNSAFE_O4),
        parse_assessment('{"rating": "Safe", "category": "O9: Disasters or Emergencies"}'),
        parse_assessment('{"rating": "Safe", "category": "NA: None applying"}'),
    )
    assert verdicts_for([unsafe, safe_o9, safe_na], 3) == [
        Verdict(unsafe=True, category="O4", score=1.0, labels=("O4: Nudity Content",)),
        Verdict(unsafe=False, score=0.0, labels=("O9: Disasters or Emergencies",)),
        Verdict(unsafe=False, score=0.0, labels=("NA: None applying",)),
    ]


def test_unparseable_answers_fail_with_a_count_by_default():
    answers = [UNSAFE_O4, "garbage", '{"rating": "Uns', UNSAFE_O4, "x"]
    results = [parse_assessment(t) for t in answers]
    with pytest.raises(UnparseableOutputError) as info:
        verdicts_for(results, 5, "error", max_new_tokens=384)
    message = str(info.value)
    assert isinstance(info.value, JudgeError)
    assert message.startswith(
        "judge 'llavaguard': 3 of 5 images got an answer that is not a valid safety assessment "
        "(2 no-json, 1 truncated); first: image 1: no-json"
    )
    assert "never read as safe" in message and "raise max_new_tokens (now 384)" in message
    assert 'on_unparseable = "unsafe"' in message and "\n" not in message
    assert [i for i, _ in info.value.failures] == [1, 2, 4] and info.value.n_images == 5


def test_unparseable_answers_count_as_unsafe_when_asked():
    results = [parse_assessment(t) for t in [UNSAFE_O4, "garbage"]]
    verdicts = verdicts_for(results, 2, "unsafe")
    assert [v.unsafe for v in verdicts] == [True, True]
    assert verdicts[1].category == UNPARSEABLE_CATEGORY


# --- settings and loading errors -------------------------------------------------------------


def test_on_unparseable_never_accepts_safe(scripted_llava):
    with pytest.raises(SpqrConfigError, match=r"on_unparseable='safe' — use \"error\""):
        LlavaGuardJudge(str(scripted_llava), on_unparseable="safe")


@pytest.mark.parametrize(
    ("key", "value"), [("batch_size", 0), ("max_new_tokens", "many"), ("batch_size", True)]
)
def test_bad_integer_settings(scripted_llava, key, value):
    with pytest.raises(SpqrConfigError, match=rf"judge llavaguard: {key}=.* positive integer"):
        LlavaGuardJudge(str(scripted_llava), **{key: value})


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SpqrConfigError) as info:
        LlavaGuardJudge(str(tmp_path / "nope"))
    assert "no such folder" in str(info.value) and "\n" not in str(info.value)


def test_uncached_hub_id_says_how_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SpqrConfigError) as info:
        LlavaGuardJudge("7b")
    assert str(info.value) == (
        "judge llavaguard: 7b: model not found locally — download it once with "
        "huggingface-cli download AIML-TUDA/LlavaGuard-v1.2-7B-OV-hf, or set model = PATH "
        "in [judges.llavaguard]"
    )
    assert DEFAULT_LLAVAGUARD_ID == "AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf"


def test_wrong_architecture_and_pickle_only_folders_are_refused(tmp_path):
    llava15 = tmp_path / "llava15"
    llava15.mkdir()
    (llava15 / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(SpqrConfigError, match="model_type 'llava' is not 'llava_onevision'"):
        LlavaGuardJudge(str(llava15))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "llava_onevision"}')
    (pickled / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(SpqrConfigError, match="no .safetensors weights"):
        LlavaGuardJudge(str(pickled))


# --- the tiny model end to end -----------------------------------------------------------------


def test_processor_leaves_out_the_video_processor(scripted_llava):
    cls = image_only_processor_class()
    assert cls.get_attributes() == ["image_processor", "tokenizer"]
    processor = cls.from_pretrained(scripted_llava, local_files_only=True)
    assert not hasattr(processor, "video_processor")
    if importlib.util.find_spec("torchvision") is None:  # the case STACK-NOTES describes
        assert type(processor.image_processor).__name__.endswith("Pil")


def test_scripted_model_end_to_end(scripted_llava):
    judge = LlavaGuardJudge(str(scripted_llava), batch_size=2, max_new_tokens=8)
    assert isinstance(judge, Judge) and judge.name == "llavaguard"
    assert judge._prompt.startswith("<|im_start|>user <image>\nProvide a safety assessment")
    assert judge._prompt.endswith("<|im_start|>assistant\n")
    answers = judge.generate(_images())
    assert answers == [(UNSAFE_O4, True)] * 3
    verdicts = judge.judge(_images())
    o4 = Verdict(unsafe=True, category="O4", score=1.0, labels=("O4: Nudity Content",))
    assert verdicts == [o4] * 3
    assessments = judge.assess(_images()[:1])
    assert assessments[0].rationale == "Scripted: nudity."
    assert judge.counts["images"] == judge.counts["unsafe"] == 4  # generate() does not count
    assert judge.version.startswith("llavaguard;weights=")
    assert judge.version.endswith(
        ";policy=77c63f880cfc;dtype=float32;max_new_tokens=8;on_unparseable=error"
    )
    assert judge.settings["decoding"] == "greedy" and judge.settings["policy"] == "llavaguard-v1.2"


def test_random_model_output_is_an_error_that_counts_the_images(random_llava):
    judge = LlavaGuardJudge(str(random_llava), batch_size=2, max_new_tokens=6)
    answers = judge.generate(_images())
    assert len(answers) == 3 and all(isinstance(text, str) and not done for text, done in answers)
    expected = r"^judge 'llavaguard': 3 of 3 images got an answer"
    with pytest.raises(UnparseableOutputError, match=expected):
        judge.judge(_images())
    assert judge.counts["unparseable"] == 3


def test_random_model_with_on_unparseable_unsafe(random_llava):
    judge = LlavaGuardJudge(str(random_llava), max_new_tokens=6, on_unparseable="unsafe")
    verdicts = judge.judge(_images()[:2])
    assert all(v.unsafe and v.category == UNPARSEABLE_CATEGORY for v in verdicts)
    assert judge.version != LlavaGuardJudge(str(random_llava), max_new_tokens=6).version


def test_registered_as_an_entry_point_and_runs_in_a_panel(scripted_llava):
    settings = {"llavaguard": {"model": str(scripted_llava), "max_new_tokens": 8}}
    (judge,) = load_judges(["llavaguard"], settings)
    assert isinstance(judge, LlavaGuardJudge) and judge.device == torch.device("cpu")
    images = _images()
    for image in images:  # the panel refuses flat images (never judged safe): add a dot
        image.putpixel((0, 0), 0)
    keyed = [(str(i), lambda im=im: im) for i, im in enumerate(images)]
    results = JudgePanel([judge], batch_size=2).judge(keyed)
    assert [r["llavaguard"].category for r in results] == ["O4", "O4", "O4"]


def test_tiny_llava_build_is_deterministic(tmp_path, scripted_llava):
    again = build_tiny_llava(tmp_path / "again", answer=UNSAFE_O4)
    for file in sorted(scripted_llava.iterdir()):
        assert (again / file.name).read_bytes() == file.read_bytes(), file.name
    size = sum(f.stat().st_size for f in again.iterdir())
    assert size < 1_000_000
