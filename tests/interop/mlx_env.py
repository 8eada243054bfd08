"""The one place the interop tests get MLX from: import mlx and mlx-lm, pip-
installing mlx[cpu] and mlx-lm when missing; exit 77 (ctest SKIP) with the
reason when pip cannot reach them."""
import subprocess
import sys


def require_mlx():
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mlx[cpu]", "mlx-lm"], capture_output=True)
        if r.returncode:
            print("SKIP: pip could not install mlx[cpu] mlx-lm:", r.stderr.decode()[-300:])
            sys.exit(77)
