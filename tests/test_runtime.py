"""engine.runtime: no Taichi initialization at import, idempotent init, conflicts rejected."""

import subprocess
import sys

import pytest


def test_import_does_not_initialize_taichi():
    code = (
        "import engine, engine.simulator, engine.solvers.mpm, engine.coupling, engine.colliders, engine.materials\n"
        "from taichi.lang import impl\n"
        "assert engine.runtime.current() is None\n"
        "assert impl.get_runtime().prog is None, 'Taichi was initialized at import'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_init_is_idempotent_and_rejects_conflicts(runtime):
    import engine

    assert engine.init(arch=runtime.arch, precision="f64", deterministic=runtime.deterministic) == runtime
    with pytest.raises(ValueError, match="already initialized"):
        engine.init(arch=runtime.arch, precision="f32")
    with pytest.raises(ValueError, match="arch"):
        engine.init(arch="tpu")
    with pytest.raises(ValueError, match="precision"):
        engine.init(precision="f16")
    with pytest.raises(ValueError, match="deterministic"):
        engine.init(arch="cuda", precision="f64", deterministic=True)
