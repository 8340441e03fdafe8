"""PEFT's own tests against sinelr.peft (issue #38): its ``tests/test_custom_models.py``, run
with its LoRA and DoRA rows on the MLP models switched to sine LoRA.

Nothing of PEFT's test code is kept here. The test fetches the sdist of the installed PEFT
version from the package index (``pip download peft==<version> --no-binary :all: --no-deps``),
unpacks it under ``tmp_path``, and runs its ``tests/test_custom_models.py`` in a subprocess
(one thread, ``--junitxml``), with a small pytest plugin that this file writes (:data:`PLUGIN`).
It skips, saying why, where the index cannot be reached.

What the plugin and this file change, and nothing else:

1. **The rows.** Every item parametrised by a ``TEST_CASES`` row with ``LoraConfig`` on the
   ``MLP`` or ``MlpUsingParameters`` model, and by a ``MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES``
   row with ``LoraConfig`` and tuner ``"lora"`` (the MLP model), runs with ``SineLoraConfig``
   and ``omega=30`` added to its config kwargs, swapped in when the test function is called
   (the ids stay PEFT's). All other items are deselected: PEFT's other methods, its LoRA rows
   on Conv, Embedding and MultiheadAttention models (sine LoRA refuses them as targets;
   tests/test_sinelr_peft.py checks that), and the tests parametrised by the config class
   alone, which look their row up in ``TEST_CASES`` by class.
2. **The harness's class comparisons** (:data:`HARNESS_EDITS`): where PEFT's harness compares
   ``config_cls == LoraConfig`` or ``config_cls not in (LoraConfig, ...)``, it asks
   ``issubclass`` instead, so that a ``LoraConfig`` subclass takes LoRA's branches (the skips
   for ``target_parameters`` with several adapters, BD-LoRA's delta weight and Conv groups;
   the mixed-adapter-batch tests; the error on a second adapter with another ``bias``). Each
   edit must match PEFT's text, or this test fails: a new PEFT's harness needs a look.
3. **Running it at all:** an empty ``tests/__init__.py`` (PEFT's tests import each other
   relatively; the sdist has none), a stand-in ``diffusers`` module with an empty
   ``StableDiffusionPipeline`` class where diffusers is not installed (PEFT's
   ``testing_common.py`` imports it for two ``isinstance`` checks that custom models never
   meet), ``-o addopts=`` (PEFT's ``addopts`` ask for pytest-cov's ``--cov``), and
   ``HF_HUB_OFFLINE=1`` (PEFT's custom models need nothing from the Hub), without this
   process's ``PYTEST_*`` variables (an xdist worker's, ``PYTEST_ADDOPTS``).

Every failure must then be one of:

- **a refusal:** the row uses a PEFT feature that sine LoRA refuses (:data:`REFUSED`: VeLoRA,
  BD-LoRA, ``lora_bias``, MonteCLoRA, KaSA, ``target_parameters``, MiCA's initialisation) and
  the failure is sine LoRA's refusal of it, or the test calls ``add_weighted_adapter``, which
  sine LoRA refuses for every row (:data:`REFUSED_CALLS`);
- **a known harness expectation** (:data:`HARNESS_EXPECTATIONS`): a check of PEFT's own
  wording or naming that a method of another name cannot meet; each is listed with why.

The summary test asserts that there is no other failure and no error, that each refused
feature's rows fail with its refusal, and prints the counts (benchmarks/RESULTS.md records
them for PEFT 0.22.0). ``SINELR_PEFT_UPSTREAM_ARGS`` adds pytest arguments to the subprocess
(``-k ...`` for a subset, ``-n 2`` for xdist); the counts are then those of the subset, and a
subset that selects a refused row only where it passes fails the refusal check.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

peft = pytest.importorskip("peft", reason="sinelr.peft needs peft (pip install -e .[dev])")
pytest.importorskip("sinelr.peft")

pytestmark = pytest.mark.slow

OMEGA = 30.0
MODELS = ("MLP", "MlpUsingParameters")
"""PEFT's custom models whose LoRA rows are switched: their targets are ``nn.Linear`` layers
(or, for ``target_parameters``, their weights)."""

REFUSED = {
    "velora_config": ("VeLoRA", "sine LoRA does not combine with PEFT's VeloraLinearVariant"),
    "use_bdlora": ("BD-LoRA", "sine LoRA does not combine with PEFT's BdLoraLinearVariant"),
    "lora_bias": ("lora_bias", "sine LoRA does not support lora_bias="),
    "monteclora_config": (
        "MonteCLoRA",
        "sine LoRA does not combine with PEFT's MontecloraLinearVariant",
    ),
    "kasa_config": ("KaSA", "sine LoRA does not combine with PEFT's KasaLinearVariant"),
    "target_parameters": ("target_parameters", "sine LoRA does not support target_parameters="),
    "init_lora_weights=mica": ("MiCA", "init_lora_weights='mica' is made for LoRA's update B A, "),
}
"""A row's config setting that sine LoRA refuses -> (the feature's name in the counts, the text
of sine LoRA's refusal). A key ``name=value`` matches that value only; a plain ``name``, any
true value."""

REFUSED_CALLS = {
    "add_weighted_adapter": "add_weighted_adapter cannot combine sine LoRA adapters",
}
"""PEFT calls that sine LoRA refuses whatever the row (docs/peft.md says why), and the text of
the refusal; a failure with it is that call's refusal."""

HARNESS_EDITS = {
    "tests/test_custom_models.py": [
        ("(config_cls == LoraConfig)", "issubclass(config_cls, LoraConfig)"),
    ],
    "tests/testing_common.py": [
        ("(config_cls == LoraConfig)", "issubclass(config_cls, LoraConfig)"),
        (
            "config_cls not in (LoraConfig, RoadConfig)",
            "not issubclass(config_cls, (LoraConfig, RoadConfig))",
        ),
        ("config_cls not in (LoraConfig,)", "not issubclass(config_cls, LoraConfig)"),
        (
            "config_cls == LoraConfig or config_cls == AdaLoraConfig",
            "issubclass(config_cls, (LoraConfig, AdaLoraConfig))",
        ),
    ],
    "tests/testing_utils.py": [
        (
            "config_cls in (LoraConfig, AdaLoraConfig)",
            "issubclass(config_cls, (LoraConfig, AdaLoraConfig))",
        ),
    ],
}
"""Textual edits of PEFT's harness, ``(old, new)`` per file: every occurrence of ``old``."""

HARNESS_EXPECTATIONS = {
    "test_targeting_unknown_layer_type_raises": (
        ("Regex pattern did not match", "Actual message: 'sine LoRA adapts nn.Linear layers"),
        "PEFT's test matches PEFT's own wording (r'Target module .* not supported'); sine LoRA "
        "raises the TypeError it expects, in its own words",
    ),
}
"""Test function name -> (texts its failure must all contain, why it cannot pass)."""

PLUGIN = '''\
"""sinelr's plugin for PEFT's test_custom_models.py, written by sinelr's
tests/test_peft_upstream.py: LoRA rows on the MLP models run as sine LoRA; the rest is
deselected."""

import json

import pytest
from peft import LoraConfig

from sinelr.peft import SineLoraConfig

OMEGA = {omega!r}
MODELS = {models!r}
REFUSED = {refused!r}
KWARGS = ("config_kwargs", "config_kwargs_1", "config_kwargs_2")


def _row(params):
    """This item's config kwargs (a list: one or two adapters') if it is a LoRA row on an MLP
    model, else None."""
    if params.get("config_cls") is not LoraConfig:
        return None
    if "model_id" in params:  # a TEST_CASES row
        return [params["config_kwargs"]] if params["model_id"] in MODELS else None
    if params.get("tuner_method") == "lora":  # MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES: the MLP
        return [params["config_kwargs_1"], params["config_kwargs_2"]]
    return None


def _refused(rows):
    found = []
    for key, feature in REFUSED.items():
        name, _, value = key.partition("=")
        for kwargs in rows:
            if (kwargs.get(name) == value) if value else kwargs.get(name):
                found.append(feature)
                break
    return found


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {{}})
        rows = _row(params)
        if rows is None:
            drop.append(item)
            continue
        item.user_properties.append(("sinelr_refused", json.dumps(_refused(rows))))
        keep.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Swap LoRA for sine LoRA in this call's arguments (the ids stay PEFT's)."""
    args = pyfuncitem.funcargs
    args["config_cls"] = SineLoraConfig
    for key in KWARGS:
        if key in args:
            args[key] = {{**args[key], "omega": OMEGA}}
'''

DIFFUSERS_STANDIN = '''\
"""A stand-in for diffusers: PEFT's testing_common.py imports StableDiffusionPipeline for two
isinstance checks that PEFT's custom models never meet."""


class StableDiffusionPipeline:
    pass
'''

UNREACHABLE = (
    "Could not fetch URL",
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
)


@dataclass
class Outcome:
    name: str
    kind: str  # passed, skipped, failed, error
    message: str = ""  # the failure's message: the exception, without the traceback
    refused: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """The failure's message, on one line and short."""
        return " ".join(self.message.split("\n", 1)[0].split())[:300]


@dataclass
class Suite:
    version: str
    command: list[str]
    returncode: int
    outcomes: list[Outcome]
    output: str

    def count(self, kind: str) -> int:
        return sum(outcome.kind == kind for outcome in self.outcomes)


def fetch_sdist(version: str, directory: Path, env: dict[str, str] | None = None) -> Path:
    """PEFT ``version``'s sdist from pip's package index; skips, saying why, where the index
    cannot be reached or has no sdist of that version (a development install of PEFT)."""
    command = [
        *(sys.executable, "-m", "pip", "download", f"peft=={version}"),
        *("--no-binary", ":all:", "--no-deps", "--retries", "1", "--timeout", "30"),
        *("--disable-pip-version-check", "-d", str(directory)),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    output = proc.stdout + proc.stderr
    sdists = sorted(directory.glob(f"peft-{version}.tar.gz"))
    if proc.returncode != 0 or not sdists:
        unreachable = [line for line in output.splitlines() if any(s in line for s in UNREACHABLE)]
        if unreachable:
            pytest.skip(
                f"PEFT's tests need peft=={version}'s sdist, and the package index cannot be "
                f"reached: {unreachable[-1].strip()[:300]}"
            )
        if "No matching distribution found" in output:
            pytest.skip(f"the package index has no sdist of peft=={version}, the installed PEFT")
        pytest.fail(f"pip download peft=={version} failed:\n{output[-3000:]}")
    return sdists[0]


def unpack(sdist: Path, directory: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(directory, filter="data")
    (root,) = [path for path in directory.iterdir() if path.is_dir()]
    assert (root / "tests" / "test_custom_models.py").is_file(), f"{sdist.name}: no tests"
    return root


def adapt(root: Path, plugins: Path) -> None:
    """The harness edits, the plugin, tests/__init__.py and the diffusers stand-in."""
    for relative, edits in HARNESS_EDITS.items():
        path = root / relative
        text = path.read_text()
        for old, new in edits:
            assert old in text, f"{relative}: PEFT's harness no longer has {old!r}: revisit it"
            text = text.replace(old, new)
        path.write_text(text)
    (root / "tests" / "__init__.py").touch()
    refused = {key: label for key, (label, _) in REFUSED.items()}
    plugin = PLUGIN.format(omega=OMEGA, models=MODELS, refused=refused)
    (plugins / "sinelr_upstream.py").write_text(plugin)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        (plugins / "diffusers").mkdir()
        (plugins / "diffusers" / "__init__.py").write_text(DIFFUSERS_STANDIN)


def read_junit(path: Path) -> list[Outcome]:
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        kind, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                kind = {"failure": "failed"}.get(tag, tag)
                message = element.get("message", "")
                break
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        refused = json.loads(properties.get("sinelr_refused", "[]"))
        outcomes.append(Outcome(name, kind, message, refused))
    return outcomes


def classify(outcome: Outcome) -> str:
    """``refused: <feature>``, ``harness: <test>`` or ``unexpected``, for a failure."""
    texts = {label: text for label, text in REFUSED.values()}
    for feature in outcome.refused:
        if outcome.kind == "failed" and texts[feature] in outcome.message:
            return f"refused: {feature}"
    for call, text in REFUSED_CALLS.items():
        if outcome.kind == "failed" and text in outcome.message:
            return f"refused: {call}"
    function = outcome.name.partition("[")[0]
    texts, _ = HARNESS_EXPECTATIONS.get(function, ((), ""))
    if outcome.kind == "failed" and texts and all(text in outcome.message for text in texts):
        return f"harness: {function}"
    return "unexpected"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    version = peft.__version__
    tmp_path = tmp_path_factory.mktemp("peft_upstream")
    sdist = fetch_sdist(version, tmp_path / "sdist")
    root = unpack(sdist, tmp_path / "src")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    adapt(root, plugins)
    junit = tmp_path / "junit.xml"
    command = [
        *(sys.executable, "-m", "pytest", "tests/test_custom_models.py"),
        *("-p", "sinelr_upstream", "-o", "addopts=", "-p", "no:cacheprovider"),
        *("-q", "--no-header", "-p", "no:randomly", f"--junitxml={junit}"),
        *shlex.split(os.environ.get("SINELR_PEFT_UPSTREAM_ARGS", "")),
    ]
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=4 * 3600
    )
    output = proc.stdout + proc.stderr
    assert junit.is_file(), f"PEFT's suite did not run (exit {proc.returncode}):\n{output[-5000:]}"
    return Suite(version, command, proc.returncode, read_junit(junit), output)


def test_peft_custom_models_suite_against_sine_lora(suite: Suite) -> None:
    """Every failure of PEFT's suite is sine LoRA's refusal of a feature the row uses or a
    listed harness expectation; there are no errors; each refused feature whose rows ran is
    refused somewhere (not PEFT's LoRA behaviour passing under a sine name). The counts are
    printed (``-s`` or ``-rA`` shows them). One test, so that xdist runs the suite once."""
    failures = collections.Counter()
    unexpected = []
    for outcome in suite.outcomes:
        if outcome.kind in ("failed", "error"):
            label = classify(outcome)
            failures[label] += 1
            if label == "unexpected":
                unexpected.append(outcome)
    lines = [
        f"PEFT {suite.version} tests/test_custom_models.py, sine LoRA rows at omega={OMEGA:g}: "
        f"{len(suite.outcomes)} tests, {suite.count('passed')} passed, "
        f"{suite.count('skipped')} skipped, {suite.count('failed')} failed, "
        f"{suite.count('error')} errors",
        *(f"  {label}: {n}" for label, n in sorted(failures.items())),
    ]
    print("\n".join(lines))
    if not suite.outcomes or not suite.count("passed"):
        pytest.fail(f"no test ran or passed:\n{suite.output[-5000:]}", pytrace=False)
    if unexpected:
        details = [f"  {o.kind} {o.name}: {o.summary}" for o in unexpected[:60]]
        pytest.fail("\n".join([*lines, "unexpected:", *details]), pytrace=False)
    ran = [outcome for outcome in suite.outcomes if outcome.kind != "skipped"]
    features = {feature for outcome in ran for feature in outcome.refused}
    refused = {label.removeprefix("refused: ") for label in failures}
    assert features <= refused, f"rows with {sorted(features - refused)} never refused"


def test_an_unreachable_index_skips(tmp_path: Path) -> None:
    """Without the package index (here: a closed port, pip's configuration files off) the
    suite skips, saying why, instead of failing."""
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
    }
    env.pop("PIP_EXTRA_INDEX_URL", None)
    with pytest.raises(pytest.skip.Exception, match="the package index cannot be reached"):
        fetch_sdist(peft.__version__, tmp_path, env=env)
