"""keepalived as examples/keepalived/ configures it, moved onto the harness's own LAN.

The harness runs the example files themselves: `render` swaps only the documentation
addresses and the check script's path, and refuses an example that no longer holds
one of them, so what the test proves is what the README tells an operator to install.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "keepalived"
CONFIGS = {"lb1": "keepalived-master.conf", "lb2": "keepalived-backup.conf"}
CHECK_SCRIPT = "check_caslb.sh"
INSTALLED_SCRIPT = "/etc/keepalived/check_caslb.sh"
# The user keepalived runs check scripts as under enable_script_security.
SCRIPT_USER = "keepalived_script"
# What examples/keepalived/README.md tells an operator to run to create it.
CREATE_SCRIPT_USER = ("useradd", "--system", "--no-create-home",
                      "--shell", "/usr/sbin/nologin", SCRIPT_USER)
# The documentation addresses of the examples (RFC 5737).
EXAMPLE_VIP, EXAMPLE_NODES = "192.0.2.10", {"lb1": "192.0.2.11", "lb2": "192.0.2.12"}


def render(text: str, replacements: Mapping[str, str]) -> str:
    """`text` with every key of `replacements` replaced.

    Raises:
        ValueError: a key does not occur in `text` (the example changed under us).
    """
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"the keepalived example no longer contains {old!r}")
        text = text.replace(old, new)
    return text


def node_config(node: str, vip: str, addresses: Mapping[str, str], script: Path) -> str:
    """The example config of `node` with this LAN's VIP, node addresses and script path."""
    replacements = {EXAMPLE_VIP: vip, INSTALLED_SCRIPT: str(script)}
    replacements |= {EXAMPLE_NODES[name]: addresses[name] for name in EXAMPLE_NODES}
    return render((EXAMPLES / CONFIGS[node]).read_text(), replacements)


def install_script() -> Path:
    """Copy check_caslb.sh into a new folder as the README installs it (root's, mode 0755).

    keepalived runs a script only when no directory on its path is writable by others
    (sticky ones such as /tmp excepted), and the script user must be able to reach it:
    so a folder of its own in the system's temporary folder, not the caller's (pytest's
    are private to root). The caller removes it.
    """
    folder = Path(tempfile.mkdtemp(prefix="caslb-ha-check-"))
    folder.chmod(0o755)
    script = folder / CHECK_SCRIPT
    shutil.copyfile(EXAMPLES / CHECK_SCRIPT, script)
    script.chmod(0o755)
    return script


def ensure_script_user() -> bool:
    """Create the script user as the README says, if it is missing; True if created.

    Raises:
        RuntimeError: it is missing and could not be created.
    """
    if subprocess.run(["getent", "passwd", SCRIPT_USER], capture_output=True,
                      check=False).returncode == 0:
        return False
    done = subprocess.run(CREATE_SCRIPT_USER, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(CREATE_SCRIPT_USER)}: {done.stderr.strip()}")
    return True


def argv(config: Path, run_dir: Path) -> Sequence[str]:
    """keepalived in the foreground, VRRP only, logging to stderr, with its own pid files."""
    return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
            "--use-file", str(config), "--pid", str(run_dir / "keepalived.pid"),
            "--vrrp_pid", str(run_dir / "vrrp.pid"),
            "--checkers_pid", str(run_dir / "checkers.pid")]
