"""A peer's ExaBGP configuration (kumo.edge.exabgp), checked by ExaBGP's own parser."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from kumo.edge.exabgp import PeerConfig, announce, environment, exabgp_command, render_config, teardown

PEER = PeerConfig("p1", "r1", "192.0.2.1", 65001, 4200000100, "192.0.2.2", 9, 3, 'pa"ss\\word {};', 10_000)


def test_the_configuration_holds_the_peer_and_a_password_no_character_can_break(tmp_path: Path) -> None:
    text = render_config(PEER, tmp_path / "bgp.sock")
    assert "neighbor 192.0.2.1 {" in text and "local-as 4200000100;" in text and "hold-time 9;" in text
    encoded = base64.b64encode(PEER.password.encode()).decode()  # type: ignore[union-attr]
    assert f'md5-password "{encoded}";' in text and "md5-base64 true;" in text
    conf = tmp_path / "bgp.conf"
    conf.write_text(text)
    checked = subprocess.run(
        [exabgp_command(), "validate", str(conf)], capture_output=True, text=True, timeout=60, env=environment()
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_commands() -> None:
    assert announce("192.0.2.1", "10.0.1.0/24", "192.0.2.2") == (
        "neighbor 192.0.2.1 announce route 10.0.1.0/24 next-hop 192.0.2.2"
    )
    assert teardown("192.0.2.1", 1) == "neighbor 192.0.2.1 teardown 1"
