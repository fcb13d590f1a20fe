"""examples/house-prices/k8s/ is exactly what the renderer writes today: a change to the
renderer must update the example (re-render with the commands in its README)."""

import pytest

from k8s_render import FLOWS, run_render
from k8s_checks import REPO

EXAMPLE = REPO / "examples" / "house-prices" / "k8s"


@pytest.mark.parametrize("target", ["fluid", "argo"])
def test_example_is_the_current_render(tmp_path, target):
    out = tmp_path / target
    run_render(FLOWS["house-prices"], target, "--out", str(out))
    written = sorted(p.name for p in out.iterdir())
    kept = sorted(p.name for p in (EXAMPLE / target).iterdir())
    assert written == kept
    for name in written:
        assert (out / name).read_bytes() == (EXAMPLE / target / name).read_bytes(), (
            "%s/%s differs from the renderer's output; re-render the example" % (target, name))


@pytest.mark.parametrize("target", ["fluid", "argo"])
def test_out_dir_holds_the_same_documents_as_stdout(tmp_path, target):
    import yaml

    out = tmp_path / target
    run_render(FLOWS["fan-in"], target, "--out", str(out))
    from_files = [yaml.safe_load(p.read_text()) for p in sorted(out.iterdir())]
    from_stdout = [d for d in yaml.safe_load_all(run_render(FLOWS["fan-in"], target).stdout) if d]
    assert from_files == from_stdout
