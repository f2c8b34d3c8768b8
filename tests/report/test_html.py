"""The HTML report parses, is self-contained, shows the charts and images, blurs unsafe ones."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pytest_spqr.core.record import (
    ImageEntry,
    JudgeVerdict,
    RunRecord,
    TestEntry,
    entry_from_axis,
    load_record,
)
from pytest_spqr.report.blur import laplacian_energy
from pytest_spqr.report.html import render_html
from tests.report.conftest import CATEGORIES, FAILURE, MODELS, SCENARIOS


class Page(HTMLParser):
    """Tags, attributes and text of a document, with a check that every tag is closed."""

    VOID = {"meta", "img", "br", "link", "input", "hr", "path", "rect", "circle", "use", "stop"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.unbalanced: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), list(self.stack)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), list(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a, _ in self.elements
                if t == tag and all((a.get(k) or "").split().count(v) or a.get(k) == v
                                    for k, v in attrs.items())]

    @property
    def content(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def page(demo_report: Path) -> Page:
    return Page(demo_report.read_text(encoding="utf-8"))


def decode(uri: str) -> Image.Image:
    header, data = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_document_is_well_formed_and_self_contained(page: Page, demo_report: Path) -> None:
    text = demo_report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert page.unbalanced == [] and page.stack == []
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag, attrs, _ in page.elements:
        for name in ("src", "href", "xlink:href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
    assert "url(http" not in text and "@import" not in text


def test_sections_verdict_and_failure_message(page: Page) -> None:
    ids = {a.get("id") for _, a, _ in page.elements if a.get("id")}
    assert {"leaderboard", "failures", "radar", "bft", "flagged", "tests", "run"} <= ids
    assert "FAILED: 1 of 10 tests failed" in page.content
    assert " ".join(FAILURE.split()) in page.content  # the message, unescaped by the parser
    assert page.all("pre")


def test_leaderboard_in_table_1_layout(page: Page) -> None:
    (table,) = page.all("table", **{"class": "leaderboard"})
    assert table is not None
    heads = [a for t, a, stack in page.elements if t == "th" and "table" in stack]
    assert any(a.get("colspan") == "3" for a in heads)  # "Shared axes" over S, P, Q
    content = page.content
    assert "Shared axes" in content
    for scenario in SCENARIOS:
        assert f"{scenario} (lite)" in content
    for model in MODELS:
        assert model in content


def test_one_radar_chart_per_model_with_the_categories(page: Page, demo_report: Path) -> None:
    charts = page.all("svg", **{"class": "chart"})
    assert len(charts) == len(MODELS)
    assert all((c.get("aria-label") or "").startswith("S-P-Q-R profile of") for c in charts)
    text = demo_report.read_text(encoding="utf-8")
    for category in CATEGORIES:
        assert f">{category}<" in text  # axis labels are SVG text
    assert "Robustness" in text and "Prompt adherence" in text


def test_every_image_is_embedded_and_all_harmful_prompt_images_are_blurred(
    page: Page, demo_record: RunRecord
) -> None:
    imgs = page.all("img")
    pairs = sum(len(e.pairs) for _, e in demo_record.axes("robustness"))
    flagged = sum(min(12, sum(i.unsafe for i in e.images)) for _, e in demo_record.axes("safety"))
    assert len(imgs) == 2 * pairs + flagged
    assert all((i.get("src") or "").startswith("data:image/") for i in imgs)
    blurred = [i for i in imgs if i.get("data-blurred") == "true"]
    unsafe_alts = [i for i in imgs if (i.get("alt") or "").startswith("unsafe")]
    # every embedded image comes from a harmful prompt: blurred, whatever the judge said
    assert unsafe_alts and len(blurred) == len(imgs)


def test_blurred_images_lost_their_detail(page: Page, demo_record: RunRecord) -> None:
    by_path = {}
    for _, entry in demo_record.axes("robustness"):
        for pair in entry.pairs:
            for image in (pair.before, pair.after):
                by_path[(image.prompt, image.seed, image.unsafe)] = image.path
    checked = {"blurred": 0, "sharp": 0}
    clear = Page(render_html(demo_record, unblurred=True))  # the opt-out shows the originals
    for img in [*page.all("img"), *clear.all("img")]:
        alt = img.get("alt") or ""
        shown = decode(img["src"] or "")
        key = "blurred" if img.get("data-blurred") == "true" else "sharp"
        if checked[key] >= 5:
            continue
        original = next(
            Image.open(path).convert("RGB") for (prompt, seed, unsafe), path in by_path.items()
            if f"prompt {prompt!r} (seed {seed})" in alt and unsafe == alt.startswith("unsafe"))
        ratio = laplacian_energy(shown) / laplacian_energy(original)
        if key == "blurred":
            assert ratio < 0.05, ratio
        else:
            assert ratio > 0.9, ratio
        checked[key] += 1
    assert checked == {"blurred": 5, "sharp": 5}


def test_flipped_prompts_come_first(page: Page) -> None:
    cards = [a.get("class") for a in page.all("div") if a.get("class") in ("card", "card up", "card down")]
    first_block = cards[:20]  # models/aligned-v1, general: 4 flips up, 1 down, then the rest
    rank = {"card up": 0, "card down": 1, "card": 2}
    assert [rank[c] for c in first_block] == sorted(rank[c] for c in first_block)
    assert first_block[:5] == ["card up"] * 4 + ["card down"]


def test_unblurred_opt_out_shows_the_originals(demo_record: RunRecord) -> None:
    page = Page(render_html(demo_record, unblurred=True, max_pairs=4, max_flagged=1))
    imgs = page.all("img")
    assert imgs and not [i for i in imgs if i.get("data-blurred") == "true"]
    unsafe = [i for i in imgs if (i.get("alt") or "").startswith("unsafe")]
    assert unsafe and all(laplacian_energy(decode(i["src"] or "")) > 20 for i in unsafe)
    assert "more pairs not shown" in page.content


def test_missing_images_and_an_empty_run_still_render(tmp_path: Path) -> None:
    image = ImageEntry("gone", 1, path=str(tmp_path / "missing.png"),
                       verdicts={"j": JudgeVerdict(True, "x", 0.9)})
    entry = entry_from_axis("safety", 0.0, 1, model="m", images=[image])
    record = RunRecord("0.1.0", "now", tests=(TestEntry("t.py::x", "passed", axes=(entry,)),))
    page = Page(render_html(record))
    assert "image not found" in page.content and not page.all("img")
    empty = Page(render_html(RunRecord("0.1.0", "now")))
    assert "no tests recorded" in empty.content and empty.unbalanced == []


def test_write_report_writes_both_files(demo_report: Path, demo_record: RunRecord) -> None:
    assert demo_report.name == "index.html"
    assert load_record(demo_report.parent / "spqr.json") == demo_record
    assert demo_report.stat().st_size < 2_000_000


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    """Prompts, nodeids, messages and model labels come from users: never markup."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    image = ImageEntry(evil, 1, categories=(evil,), path=str(tmp_path / "none.png"),
                       verdicts={"j": JudgeVerdict(True, evil, 0.9)})
    entry = entry_from_axis("safety", 0.5, 1, model=evil, images=[image],
                            by_category={evil: 0.5, "b": 0.5, "c": 0.5})
    record = RunRecord("0.1.0", "now", options={"x": evil}, tests=(
        TestEntry(f"t.py::x[{evil}]", "failed", message=evil, axes=(entry,)),))
    text = render_html(record)
    assert "<script" not in text and "onerror=alert" not in text.replace("onerror=alert(1)&gt;", "")
    page = Page(text)
    assert not page.all("script") and page.unbalanced == []
    assert not [a for _, a, _ in page.elements if any(k.startswith("on") for k in a)]


def test_without_matplotlib_the_report_says_how_to_get_charts(
    demo_record: RunRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import raises
    page = Page(render_html(demo_record, max_pairs=1, max_flagged=1))
    assert not page.all("svg") and "pip install 'pytest-spqr[report]'" in page.content


def test_usage_per_process_is_shown_and_summed_in_one_line() -> None:
    from pytest_spqr.core.record import ProcessUsage
    from pytest_spqr.report.tables import usage_line

    record = RunRecord("0.1.0", "now", usage={
        "gw0": ProcessUsage(peak_rss_mib=590.2, device="cpu", images_generated=54, images_judged=0),
        "gw1": ProcessUsage(peak_rss_mib=537.0, device="cpu", images_generated=56, images_judged=56,
                            images_remote=4, images_judged_remote=56),
    })
    page = Page(render_html(record))
    assert "Usage (peak memory" in page.content and "images_generated=54" in page.content
    assert usage_line(record) == ("110 images generated (+4 by Ray tasks) (gw0 54, gw1 56), "
                                  "56 judged (56 by Ray); peak RSS 590 MiB (largest process)")
    assert usage_line(RunRecord("0.1.0", "now")) is None
