"""The subnetwork dashboard: what collect saves equals what l3d computes, render writes it into one HTML page
(the same page as before its HTML, CSS and JavaScript moved into package files), and the page works in a real
browser (headless Chromium driven over the DevTools protocol)."""
import base64
import fcntl
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GPTNeoConfig, GPTNeoForCausalLM

import l3d
from l3d.experiments.cnn import DIGITS_BLOCK, DigitsCNN, digits
from l3d.experiments.corpus import story_corpus
from l3d.experiments.subnetworks import affected_outputs, label_purity
from l3d.experiments.toys import TMS, sparse_features, train_toy
from l3d.experiments.transformer import attention_tensors, logits
from l3d.report import dashboard
from l3d.report.dashboard import DATA, IMAGES, INDEX, collect, feature_circuits, load, main, png, render
from l3d.report.dashboard import page as page_module

N_REF = 3
DELTAS = [-1.0, -0.5, 0.0, 0.5, 1.0]
ROOT = Path(__file__).parents[2]
# data.json of the toy and image fixtures below, and the index.html the code before issue 29 rendered from it (the page
# then lived in Python strings, the PNGs came from a hand-written encoder). A deliberate change to the page renders
# these again: `render(copy)` of each folder, and say in the commit what changed.
REFERENCE = Path(__file__).parent / "dashboard_reference"
PNG_URL = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


# --- three small decompositions, one per kind of sample ----------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """TMS (5 features, 2 hidden) decomposed into 6 subnetworks for a few epochs, and its dashboard."""
    torch.manual_seed(0)
    train = sparse_features(1000, 5, 0.05, generator=torch.Generator().manual_seed(1))
    model = TMS(5, 2)
    train_toy(model, train, train, epochs=10, progress=False)
    model = model.untied()
    inputs = sparse_features(256, 5, 0.05, generator=torch.Generator().manual_seed(2), drop_zero=False)
    run = l3d.decompose(model, inputs, ["W_in", "W_out", "b"],
                        l3d.L3DConfig(n_subnetworks=6, epochs=8, lr_decay_every=4, chunk_size=256), progress=False)
    decomposition, history, collector = run.decomposition, run.history, run.collector
    circuits = feature_circuits(model, {"W_in": 1, "W_out": 0, "b": 0})
    folder = collect(tmp_path_factory.mktemp("toy") / "dashboard", decomposition, collector, inputs, history=history,
                     n_ref=N_REF, seed=3, n_top=10, deltas=DELTAS, feature_names=[f"x{i}" for i in range(5)],
                     circuits=circuits, circuit_names=[f"feature {i}" for i in range(5)], title="TMS </script> <toy>")
    render(folder)
    return dict(model=model, inputs=inputs, decomposition=decomposition, history=history, collector=collector,
                circuits=circuits, folder=folder)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A tiny random GPT-Neo on story-corpus texts, 12 subnetworks fitted for 2 epochs, and its dashboard."""
    torch.manual_seed(0)
    corpus = story_corpus(16, length=8, seed=1)
    config = GPTNeoConfig(vocab_size=len(corpus.tokenizer), max_position_embeddings=8, hidden_size=16, num_layers=2,
                          num_heads=2, attention_types=[[["global", "local"], 1]], window_size=4, intermediate_size=32,
                          bos_token_id=0, eos_token_id=0)
    model = GPTNeoForCausalLM(config).eval().requires_grad_(False)
    collector = l3d.GradientCollector(model, attention_tensors(model, 1), divergence="kl", sequence=True,
                                      forward=logits, gradient_chunk_size=64)
    decomposition = l3d.Decomposition(collector.shapes, 12, 2, 0.1, seed=0)
    source = l3d.GradientSource(collector, corpus.inputs, 4, seed=0)
    history = l3d.fit(decomposition, source, 2, lr=0.01, progress=False)
    folder = collect(tmp_path_factory.mktemp("texts") / "dashboard", decomposition, collector, corpus.inputs,
                     history=history, n_ref=N_REF, seed=3, n_top=6, n_outputs=3, deltas=DELTAS, tokens=corpus.tokens,
                     decode=corpus.tokenizer.decode, labels=corpus.tags, label_names=corpus.patterns, ignore_label=0)
    render(folder)
    return dict(model=model, corpus=corpus, decomposition=decomposition, history=history, collector=collector,
                folder=folder)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The digits CNN (untrained) on 48 digits, 5 random subnetworks of its middle block, no history."""
    torch.manual_seed(0)
    model = DigitsCNN().eval().requires_grad_(False)
    pixels, labels, _ = digits(0)
    inputs, labels = pixels[:48], labels[:48]
    collector = l3d.GradientCollector(model, DIGITS_BLOCK, divergence="kl")
    decomposition = l3d.Decomposition(collector.shapes, 5, 2, 0.1, seed=0)
    folder = collect(tmp_path_factory.mktemp("images") / "dashboard", decomposition, collector, inputs, n_ref=N_REF,
                     seed=3, n_top=4, deltas=DELTAS, labels=labels, label_names=[str(d) for d in range(10)],
                     output_names=[f"digit {d}" for d in range(10)])
    render(folder)
    return dict(model=model, inputs=inputs, labels=labels, decomposition=decomposition, collector=collector,
                folder=folder)


def page_data(folder: Path) -> dict:
    """The data embedded in the rendered page."""
    html = (folder / INDEX).read_text()
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


# --- collect ---------------------------------------------------------------------------------------
def test_toy_dashboard_holds_the_top_samples_and_measures_of_every_subnetwork(toy):
    data = load(toy["folder"])
    decomposition, collector, inputs = toy["decomposition"], toy["collector"], toy["inputs"]
    impact = l3d.impact(decomposition, collector, inputs, n_ref=N_REF, seed=3)
    top = l3d.top_samples(impact, 10)
    assert data["kind"] == "vectors" and data["n_subnetworks"] == len(data["subnetworks"]) == 6
    assert data["history"]["reconstruction_error"] == pytest.approx(toy["history"].reconstruction_error, rel=1e-4)
    for k, row in enumerate(data["subnetworks"]):
        assert row["top"] == top[k].tolist()
        assert row["top_impact"] == pytest.approx(impact[top[k], k].tolist(), rel=1e-3)
        assert row["mean_impact"] == pytest.approx(impact[:, k].mean().item(), rel=1e-3)
        assert row["p_act"] == pytest.approx(toy["history"].p_act[-1][k], rel=1e-4)
        assert row["dead"] == (toy["history"].p_act[-1][k] == 0)
        assert sum(row["histogram"]["counts"]) == len(inputs)
        for s in row["top"]:
            assert data["items"][str(s)]["x"] == pytest.approx(inputs[s].tolist(), abs=1e-3)
        # the JVP at δ = 0 over the top samples: raised outputs positive and in decreasing order
        slope = l3d.output_derivative(toy["model"], decomposition, k, inputs[top[k]]).mean(0)
        assert [j for j, _ in row["raised"]] == [j for j in slope.argsort(descending=True).tolist() if slope[j] > 0]
        # the sweep: no change at δ = 0, and the change at δ = 1 is the intervention's
        assert row["sweep"]["outputs"] == list(range(5))
        assert row["sweep"]["change"][2] == [0, 0, 0, 0, 0] and row["sweep"]["divergence"][2] == 0
        moved = l3d.intervene(toy["model"], decomposition, k, [1.0], inputs[top[k]])[0]
        expected = (moved - toy["model"](inputs[top[k]])).mean(0)
        assert row["sweep"]["change"][4] == pytest.approx(expected.tolist(), abs=1e-4)
        for other, p, lift in row["coactive"]:
            assert other != k and 0 < p <= 1 and lift > 0


def test_circuit_cosines_are_those_of_the_decoder_directions(toy):
    data = load(toy["folder"])
    decoder = toy["decomposition"].decoder_directions()
    for k, row in enumerate(data["subnetworks"]):
        for i in range(5):
            d = torch.cat([decoder[n][k].flatten() for n in ("W_in", "W_out", "b")])
            c = torch.cat([toy["circuits"][n][i].flatten() for n in ("W_in", "W_out", "b")])
            cosine = torch.nn.functional.cosine_similarity(d, c, 0).abs().item()
            assert row["circuits"][i] == pytest.approx(cosine, abs=1e-4)


def test_feature_circuits_keep_one_feature_of_every_tensor():
    model = TMS(4, 2).untied()
    circuits = feature_circuits(model, {"W_in": 1, "W_out": 0, "b": 0})
    assert circuits["W_in"].shape == (4, 2, 4) and circuits["W_out"].shape == (4, 4, 2)
    assert circuits["b"].shape == (4, 4)
    torch.testing.assert_close(circuits["W_in"][2][:, 2], model.W_in[:, 2].detach())
    assert circuits["W_in"][2][:, [0, 1, 3]].abs().sum() == 0 and circuits["W_out"][1][[0, 2, 3]].abs().sum() == 0
    torch.testing.assert_close(circuits["W_in"].sum(0), model.W_in.detach())
    with pytest.raises(ValueError, match="not parameters"):
        feature_circuits(model, {"W_hidden": 0})
    with pytest.raises(ValueError, match="different sizes"):
        feature_circuits(model, {"W_in": 0, "b": 0})


def test_text_dashboard_shades_every_token_and_names_the_targets(texts):
    data = load(texts["folder"])
    corpus, decomposition, collector = texts["corpus"], texts["decomposition"], texts["collector"]
    impact = l3d.impact(decomposition, collector, corpus.inputs, n_ref=N_REF, seed=3)
    top = l3d.top_samples(impact, 6)
    pure, label = label_purity(top, corpus.tags.flatten(), ignore=0)
    assert [row["label"] for row in data["subnetworks"]] == label.tolist()
    assert [row["label_purity"] for row in data["subnetworks"]] == pytest.approx(pure.tolist(), abs=1e-3)
    assert data["kind"] == "texts" and len(data["subnetworks"]) == 12 and data["length"] == 8
    for k, row in enumerate(data["subnetworks"]):
        assert row["top"] == top[k].tolist()
        for r, s in enumerate(row["top"]):
            text = s // 8
            expected = impact[text * 8:(text + 1) * 8, k].tolist()
            assert row["token_impact"][r] == pytest.approx(expected, rel=6e-3)   # 3 digits
            assert data["items"][str(text)]["ids"] == corpus.tokens[text].tolist()
            assert data["items"][str(text)]["labels"] == corpus.tags[text].tolist()
        # the most moved output (mean ∂f/∂δ over the top samples at their positions) leads its list
        values, index = affected_outputs(texts["model"], decomposition, k, corpus.inputs[top[k] // 8], top[k] % 8,
                                         logits, 1)
        first = row["raised"][0] if values[0] > 0 else row["lowered"][0]
        assert first[0] == index[0].item() and first[1] == pytest.approx(values[0].item(), rel=1e-3)
        targets = [corpus.tokenizer.vocab[corpus.tokens[s // 8, s % 8 + 1]] for s in row["top"]]
        common = max(set(targets), key=lambda t: (targets.count(t), -targets.index(t)))   # most common, first seen
        assert row["summary"].startswith(f"→ ‘{common}’")
    # word-level tokens carry the space the tokenizer puts between them
    assert all(s.endswith(" ") for s in data["vocabulary"].values())


def test_image_dashboard_saves_the_shown_images_and_renders_them_as_png(images):
    data = page_data(images["folder"])
    assert data["kind"] == "images" and len(data["subnetworks"]) == 5 and data["p_act_from"] == "inputs"
    shown = sorted({s for row in data["subnetworks"] for s in row["top"]})
    assert sorted(map(int, data["images"])) == shown == sorted(map(int, data["items"]))
    for i in shown:
        assert data["items"][str(i)]["labels"] == [images["labels"][i].item()]
        picture = Image.open(io.BytesIO(base64.b64decode(data["images"][str(i)].split(",", 1)[1])))
        assert picture.size == (8, 8) and picture.mode == "L"
        expected = (images["inputs"][i, 0] * 255).round().to(torch.uint8)
        assert torch.equal(torch.from_numpy(np.array(picture)), expected)
    assert (images["folder"] / IMAGES).exists()
    active = l3d.batch_top_k(l3d.impact(images["decomposition"], images["collector"], images["inputs"], N_REF, 3), 0.1)
    assert [row["p_act"] for row in data["subnetworks"]] == pytest.approx(active.float().mean(0).tolist(), rel=1e-4)


def test_png_writes_rgb_images():
    pixels = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    picture = Image.open(io.BytesIO(png(pixels)))
    assert picture.mode == "RGB" and picture.size == (7, 5)
    assert torch.equal(torch.from_numpy(np.array(picture)).permute(2, 0, 1), pixels)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        png(torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 pixels"):
        png(torch.rand(3, 4, 4))


def rendered_again(name: str, tmp_path: Path) -> tuple[str, str]:
    """The page rendered now from a reference folder's data, and the one rendered before issue 29."""
    folder = shutil.copytree(REFERENCE / name, tmp_path / name, ignore=shutil.ignore_patterns(INDEX))
    return render(folder).read_text(encoding="utf-8"), (REFERENCE / name / INDEX).read_text(encoding="utf-8")


def test_the_page_is_the_one_rendered_before_it_moved_into_package_files(tmp_path):
    page, before = rendered_again("toy", tmp_path)
    assert page == before                                             # byte for byte


def test_a_data_file_from_before_issue_29_reads_its_purity_as_label_purity(tmp_path):
    folder = shutil.copytree(REFERENCE / "images", tmp_path / "images", ignore=shutil.ignore_patterns(INDEX))
    old = (folder / DATA).read_text(encoding="utf-8").replace('"label_purity":', '"purity":')
    (folder / DATA).write_text(old, encoding="utf-8")
    rows = load(folder)["subnetworks"]
    assert [r["label_purity"] for r in rows] == [0.5, 0.5, 0.5, 0.25, 0.25] and not any("purity" in r for r in rows)


def test_image_pages_differ_from_before_only_in_png_bytes_never_in_pixels(tmp_path):
    page, before = rendered_again("images", tmp_path)
    assert PNG_URL.sub("PNG", page) == PNG_URL.sub("PNG", before)
    new, old = PNG_URL.findall(page), PNG_URL.findall(before)
    assert len(new) == len(old) == 13
    for a, b in zip(new, old, strict=True):   # Pillow's files and the former hand-written encoder's: same pixels
        a, b = (Image.open(io.BytesIO(base64.b64decode(s))) for s in (a, b))
        assert a.mode == b.mode == "L" and a.size == b.size == (8, 8)
        assert np.array_equal(np.array(a), np.array(b))


def test_render_reads_the_page_its_style_and_its_script_from_the_package_files(toy, tmp_path, monkeypatch):
    package = Path(dashboard.__file__).parent
    css, js = ((package / name).read_text(encoding="utf-8") for name in ("page.css", "page.js"))
    html = (toy["folder"] / INDEX).read_text(encoding="utf-8")
    assert f"<style>\n{css}</style>" in html and f"<script>\n{js}</script>" in html
    assets = shutil.copytree(package, tmp_path / "assets", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (assets / "page.css").write_text(css + ".edited-css {}\n", encoding="utf-8")
    (assets / "page.js").write_text(js + "// edited js\n", encoding="utf-8")
    template = (assets / "page.html").read_text(encoding="utf-8")
    (assets / "page.html").write_text(template.replace("<body>", '<body data-edited="html">'), encoding="utf-8")
    monkeypatch.setattr(page_module, "ASSETS", assets)                # the files, read when rendering
    edited = render(shutil.copytree(toy["folder"], tmp_path / "dashboard")).read_text(encoding="utf-8")
    assert ".edited-css {}\n</style>" in edited and "// edited js\n</script>" in edited
    assert '<body data-edited="html">' in edited


def test_the_files_of_the_page_are_package_data():
    tomllib = pytest.importorskip("tomllib")                           # Python 3.11+
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    shipped = settings["package-data"]["l3d.report.dashboard"]
    files = {p.name for p in Path(dashboard.__file__).parent.iterdir() if p.is_file() and p.suffix != ".py"}
    assert files == {"page.html", "page.css", "page.js"}
    assert all(any(fnmatch(name, pattern) for pattern in shipped) for name in files)


def test_the_page_embeds_the_saved_data_and_the_command_line_renders_it_again(toy, tmp_path):
    folder = shutil.copytree(toy["folder"], tmp_path / "run" / "dashboard")
    assert page_data(folder) == load(folder)
    html = (folder / INDEX).read_text()
    assert "<title>TMS &lt;/script> &lt;toy></title>" in html and "http" not in html.replace("http-equiv", "")
    (folder / INDEX).unlink()
    assert main([str(tmp_path / "run")]) == folder / INDEX           # the run folder: its dashboard/ is found
    assert (folder / INDEX).read_text() == html                       # rendering is deterministic
    assert json.loads((folder / DATA).read_text()) == page_data(folder)
    with pytest.raises(FileNotFoundError, match="collect"):
        render(tmp_path)


def test_python_dash_m_renders_a_run_again(toy, tmp_path):
    folder = shutil.copytree(toy["folder"], tmp_path / "run" / "dashboard", ignore=shutil.ignore_patterns(INDEX))
    done = subprocess.run([sys.executable, "-m", "l3d.report.dashboard", str(tmp_path / "run")], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder / INDEX)
    assert (folder / INDEX).read_text() == (toy["folder"] / INDEX).read_text()


def test_a_title_holding_the_templates_placeholders_stays_text(toy, tmp_path):
    folder = shutil.copytree(toy["folder"], tmp_path / "dashboard")
    data = json.loads((folder / DATA).read_text())
    data["title"] = "{{data}} and {{js}}"
    (folder / DATA).write_text(json.dumps(data))
    html = render(folder).read_text()
    assert "<title>{{data}} and {{js}}</title>" in html   # not the JSON payload, not the script
    assert html.count('<script type="application/json" id="data">') == 1
    assert page_data(folder)["title"] == "{{data}} and {{js}}"


@pytest.mark.parametrize("damage, named", [
    (lambda text: text[: len(text) // 2], r"data\.json is damaged: not valid JSON \(JSONDecodeError: "),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "kind"}),
     r"data\.json is damaged: it lacks kind; run collect again"),
    (lambda text: "[1, 2]", r"data\.json has format a JSON list, this l3d reads format 1"),
])
def test_the_command_line_names_a_damaged_data_file_in_one_line(toy, tmp_path, capsys, damage, named):
    folder = shutil.copytree(toy["folder"], tmp_path / "run" / "dashboard")
    (folder / DATA).write_text(damage((folder / DATA).read_text()))
    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.match(r"python -m l3d\.report\.dashboard: error: .*" + named, err), err


def test_collect_refuses_what_it_cannot_show(texts, toy, tmp_path):
    with pytest.raises(ValueError, match="decode"):
        collect(tmp_path, texts["decomposition"], texts["collector"], texts["corpus"].inputs)
    with pytest.raises(ValueError, match="impact must be"):
        collect(tmp_path, toy["decomposition"], toy["collector"], toy["inputs"], impact=torch.zeros(5, 6))
    with pytest.raises(ValueError, match=r"impact must be \(samples, subnetworks\) = \(256, 6\), got \(1536,\)"):
        collect(tmp_path, toy["decomposition"], toy["collector"], toy["inputs"], impact=torch.zeros(256 * 6))
    with pytest.raises(ValueError, match=r"inputs must be vectors \(N, F\), images \(N, C, H, W\) or token ids"):
        collect(tmp_path, toy["decomposition"], toy["collector"], toy["inputs"].view(256, 5, 1))
    with pytest.raises(ValueError, match="one label per sample"):
        collect(tmp_path, toy["decomposition"], toy["collector"], toy["inputs"], labels=torch.zeros(3))


# --- in a browser ----------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no extra package."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        ours_read, theirs_write = os.pipe()
        theirs_read, ours_write = os.pipe()

        def to_fds_3_and_4():  # Chromium reads commands on fd 3 and writes replies on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (theirs_read, theirs_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "--hide-scrollbars", "about:blank"],
            pass_fds=(3, 4), preexec_fn=to_fds_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(theirs_read)
        os.close(theirs_write)
        self.writer = os.fdopen(ours_write, "wb")
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, args=(os.fdopen(ours_read, "rb"),), daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read(self, reader) -> None:
        buffer = b""
        while chunk := reader.read1(1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self.messages.put(json.loads(message))

    def send(self, method: str, session: bool = True, **params) -> dict:
        """Send a command and wait for its reply; events arriving meanwhile are kept in `events`."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        self.writer.flush()
        while True:
            reply = self.messages.get(timeout=30)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The next event `method` (of the page's session)."""
        while True:
            event = self.messages.get(timeout=30)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 10) -> None:
        """Poll until `expression` is true in the page (a hash change re-renders in a task of its own)."""
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} still false after {timeout} s")
            time.sleep(0.02)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the first element matching `selector`."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
                      f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> Image.Image:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return Image.open(path)

    def errors(self) -> list[dict]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        return [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the browser test: install Debian's chromium package (.ci/run does)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def shown_rows(browser: Chromium) -> list[int]:
    return browser.js("[...document.querySelectorAll('#rows tr')].map(r => +r.dataset.k)")


def visible(image: Image.Image) -> bool:
    """Not a blank page: many distinct colours."""
    return len(image.convert("RGB").getcolors(1 << 20) or []) > 20


def test_text_dashboard_in_chromium_sorts_links_and_shows_tokens(texts, browser, tmp_path):
    data = load(texts["folder"])
    p_act = [row["p_act"] for row in data["subnetworks"]]
    browser.open((texts["folder"] / INDEX).as_uri())
    assert shown_rows(browser) == list(range(12))
    assert browser.js("document.querySelector('#shown').textContent") == "12 of 12 subnetworks"
    descending = sorted(range(12), key=lambda k: (-p_act[k], k))
    assert descending != list(range(12))                               # sorting must change the order
    browser.click("th[data-key=p_act]")
    assert shown_rows(browser) == descending
    assert browser.js("document.querySelector('th[data-key=p_act]').getAttribute('aria-sort')") == "descending"
    browser.click("th[data-key=p_act]")
    assert shown_rows(browser) == sorted(range(12), key=lambda k: (p_act[k], k))
    assert visible(browser.screenshot(tmp_path / "index.png"))
    assert browser.js("document.querySelectorAll('svg').length") >= 3   # the history and P_act charts

    k = shown_rows(browser)[0]
    browser.click("#rows tr:first-child a")                             # from the index to a subnetwork
    assert browser.js("location.hash") == f"#s/{k}"
    browser.wait_until(f"document.querySelector('h1').textContent.startsWith('Subnetwork {k}')")
    assert browser.js("document.querySelectorAll('#samples .sample').length") == 6
    assert browser.js("document.querySelectorAll('#samples .tok.target').length") == 6
    assert browser.js("document.querySelectorAll('#samples .tok').length") == 6 * 9   # 8 inputs + the last target
    first = data["subnetworks"][k]["top"][0]
    target = data["vocabulary"][str(data["items"][str(first // 8)]["ids"][first % 8 + 1])]
    assert browser.js("document.querySelector('#samples .tok.target').textContent") == target.strip()
    assert browser.js("document.querySelectorAll('.card svg').length") >= 3   # histogram, sweep and divergence
    assert visible(browser.screenshot(tmp_path / "subnetwork.png"))

    browser.click("#samples .sample a.id")                              # from a sample to its text
    assert browser.js("location.hash") == f"#x/{first // 8}"
    browser.wait_until(f"document.querySelector('h1').textContent === 'text {first // 8}'")
    assert browser.js("document.querySelectorAll('table tbody tr').length") == 8   # one row per predicted position
    k, partner = next((k, row["coactive"][0][0]) for k, row in enumerate(data["subnetworks"]) if row["coactive"])
    browser.js(f"location.hash = '#s/{k}'")
    browser.wait_until("document.querySelector('.card') !== null")
    browser.click(f".card a[href='#s/{partner}']")                      # to the subnetwork it is most often active with
    browser.wait_until(f"document.querySelector('h1').textContent.startsWith('Subnetwork {partner}')")
    assert browser.errors() == []


def test_toy_and_image_dashboards_in_chromium(toy, images, browser, tmp_path):
    browser.open((toy["folder"] / INDEX).as_uri() + "#s/0")
    assert browser.js("document.querySelectorAll('table.vec tbody tr').length") == 10
    assert browser.js("document.querySelectorAll('table.vec tbody tr:first-child td.cell').length") == 5
    browser.js("location.hash = ''")
    browser.wait_until("document.querySelector('#rows') !== null")
    assert shown_rows(browser) == list(range(6))
    browser.click("#filter")
    browser.send("Input.insertText", text="feature 2")
    expected = [k for k, row in enumerate(load(toy["folder"])["subnetworks"]) if "feature 2" in row["summary"]]
    assert 0 < len(expected) < 6
    browser.wait_until(f"document.querySelectorAll('#rows tr').length === {len(expected)}")
    assert shown_rows(browser) == expected
    browser.open((images["folder"] / INDEX).as_uri() + "#s/1")
    assert browser.js("document.querySelectorAll('.images img').length") == 4
    assert browser.js("[...document.querySelectorAll('.images img')].every(i => i.complete && i.naturalWidth === 8)")
    assert visible(browser.screenshot(tmp_path / "images.png"))
    assert browser.errors() == []


def test_the_index_explains_its_summary_notation_and_a_run_without_dashboard_data_says_how_to_make_it(toy, tmp_path):
    page = (toy["folder"] / "index.html").read_text()
    assert "function legend()" in page and "the ground-truth circuit nearest its direction" in page
    (tmp_path / "decomposition").mkdir()
    (tmp_path / "decomposition" / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds a decomposition but no dashboard data"):
        load(tmp_path)
