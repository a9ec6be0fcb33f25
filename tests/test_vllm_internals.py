"""The executable ledger (scripts/check_vllm_internals.py against docs/patches.md): the
tree as it is passes, and an unlisted vLLM internal, added in a copy of the plugin, fails
it by name."""

import shutil
import subprocess
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import check_vllm_internals as ledger  # noqa: E402


@pytest.fixture(scope="module")
def vllm_index():
    root, _ = ledger.installed_vllm()
    return ledger.load_index(root)


def test_every_internal_the_code_relies_on_has_an_entry_in_order(vllm_index):
    uses = ledger.find_uses([REPO / d for d in ledger.SCANNED], vllm_index)
    entries = ledger.read_ledger()
    assert ledger.check(uses, entries) == []
    assert [e.number for e in entries] == list(range(1, len(entries) + 1))
    found = {u.name for u in uses}
    # What the issue that made the ledger executable named as missing is found now.
    for item in (
        "vllm.multimodal.hasher.MultiModalHasher.hash_kwargs",
        ".mm_hasher_algorithm",
        "vllm.model_executor.models.utils.PPMissingLayer",
        "vllm.model_executor.models.qwen2_5_vl.Qwen2_5_VLForConditionalGeneration._parse_and_validate_multimodal_inputs",
        "vllm.model_executor.models.qwen2_5_vl.Qwen2_5_VLForConditionalGeneration.iter_mm_grid_thw",
        "vllm.multimodal.inputs.MultiModalFeatureSpec",
        "vllm.multimodal.inputs.PlaceholderRange",
        "vllm.multimodal.processing.processor.BaseMultiModalProcessor._get_mm_hashes",
        "vllm.v1.core.sched.scheduler.Scheduler._try_schedule_encoder_inputs",
    ):
        assert item in found, item


def test_an_unlisted_private_import_fails_the_check(vllm_index, tmp_path):
    copy = tmp_path / "repo"
    for directory in ledger.SCANNED:
        shutil.copytree(REPO / directory, copy / directory, ignore=shutil.ignore_patterns("__pycache__"))
    model = copy / "sharp_plugin" / "vllm" / "model.py"
    unlisted = "from vllm.v1.worker.utils import sanity_check_mm_encoder_outputs\n"
    anchor = "from vllm.logger import init_logger\n"
    model.write_text(model.read_text().replace(anchor, anchor + unlisted))
    uses = ledger.find_uses([copy / d for d in ledger.SCANNED], vllm_index, repo=copy)
    problems = ledger.check(uses, ledger.read_ledger())
    name = "vllm.v1.worker.utils.sanity_check_mm_encoder_outputs"
    assert problems == [f"unlisted import: {name} (sharp_plugin/vllm/model.py:21)"]


def test_the_command_line_fails_on_a_ledger_out_of_order(tmp_path):
    text = (REPO / "docs" / "patches.md").read_text().replace("## 2. ", "## 20. ", 1)
    (tmp_path / "patches.md").write_text(text)
    run = subprocess.run(
        [sys.executable, "scripts/check_vllm_internals.py", "--ledger", str(tmp_path / "patches.md")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1
    assert "not numbered 1..17 in order" in run.stdout
