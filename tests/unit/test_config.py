"""Flags and endpoints → Config: valid values parse, bad values give one clear error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from csi_linstor.cli import build_parser, config_from_args
from csi_linstor.config import ConfigError, parse_endpoint


def cfg(*argv: str):
    args = build_parser().parse_args(["serve", *argv])
    return config_from_args(args)


@pytest.mark.parametrize(
    ("text", "scheme", "expect"),
    [
        ("unix:///var/lib/kubelet/plugins/x/csi.sock", "unix", "/var/lib/kubelet/plugins/x/csi.sock"),
        ("unix:/abs/csi.sock", "unix", "/abs/csi.sock"),
        ("unix:rel/csi.sock", "unix", "/base/rel/csi.sock"),
        ("unix://rel/csi.sock", "unix", "/base/rel/csi.sock"),
        ("tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000"),
        ("tcp://[::1]:10000", "tcp", "[::1]:10000"),
        ("tcp://:0", "tcp", "127.0.0.1:0"),
    ],
)
def test_endpoint_forms(text: str, scheme: str, expect: str) -> None:
    ep = parse_endpoint(text, cwd=Path("/base"))
    assert ep.scheme == scheme
    assert (str(ep.path) if scheme == "unix" else ep.grpc_address) == expect


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("unix://", "names no socket path"),
        ("tcp://host", "needs a port"),
        ("tcp://host:99999", "out of range"),
        ("http://x:1", "unsupported scheme"),
        ("/tmp/csi.sock", "unsupported scheme"),
        ("unix:///" + "x" * 120, "107 bytes"),
    ],
)
def test_bad_endpoints_are_rejected_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_endpoint(text)


def test_defaults_match_the_go_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_CONTROLLERS", raising=False)
    c = cfg("--linstor-endpoint", "http://ctl:3370", "--node", "n1")
    assert c.driver_name == "linstor.csi.linbit.com"
    assert str(c.csi_endpoint) == "unix:///var/lib/kubelet/plugins/linstor.csi.linbit.com/csi.sock"
    assert c.workers == 32 and c.mode == "all" and c.metrics_address is None
    assert c.property_namespace == "Aux" and c.label_by_storage_pool is True


def test_ls_controllers_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_CONTROLLERS", "http://a:3370, http://b:3370")
    c = cfg("--mode", "controller")
    assert c.linstor_endpoints == ("http://a:3370", "http://b:3370")
    # an explicit flag wins over the environment
    c = cfg("--mode", "controller", "--linstor-endpoint", "http://c")
    assert c.linstor_endpoints == ("http://c",)


def test_embedded_needs_no_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_CONTROLLERS", raising=False)
    c = cfg("--linstor-endpoint", "embedded")
    assert c.embedded and c.linstor_endpoints == ()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--mode", "controller"], "no LINSTOR controller"),
        (["--linstor-endpoint", "http://x"], "--node"),
        (["--linstor-endpoint", "http://x", "--mode", "controller", "--driver-name", "Bad_Name"],
         "not a valid CSI driver name"),
        (["--linstor-endpoint", "http://x", "--mode", "controller", "--metrics-address", "nope"],
         "--metrics-address"),
        (["--linstor-endpoint", "http://x", "--mode", "controller", "--bearer-token", "/nonexist"],
         "--bearer-token"),
    ],
)
def test_invalid_configs(argv: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LS_CONTROLLERS", raising=False)
    with pytest.raises(ConfigError, match=fragment):
        cfg(*argv)


def test_client_cert_needs_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LS_USER_CERTIFICATE", "-----BEGIN CERTIFICATE-----")
    monkeypatch.delenv("LS_USER_KEY", raising=False)
    with pytest.raises(ConfigError, match="together"):
        cfg("--linstor-endpoint", "https://x", "--mode", "controller")


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--workers", "zero"],
        ["serve", "--workers", "0"],
        ["serve", "--mode", "both"],
        ["serve", "--csi-endpoint", "http://x:1", "--linstor-endpoint", "embedded"],
        ["serve", "--linstor-endpoint", "embedded", "--csi-endpoint", "unix:///etc/passwd"],
    ],
)
def test_cli_bad_value_exits_nonzero_with_one_line(argv: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "csi_linstor.cli", *argv],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error" in lines[0]


def test_help_reads_well() -> None:
    proc = subprocess.run([sys.executable, "-m", "csi_linstor.cli", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--csi-endpoint", "--node", "--linstor-endpoint", "--log-level", "--mode",
                 "--driver-name", "--workers", "--metrics-address"):
        assert flag in proc.stdout


def test_kubelet_dir_flag() -> None:
    assert str(cfg("--linstor-endpoint", "embedded").kubelet_dir) == "/var/lib/kubelet"
    c = cfg("--linstor-endpoint", "embedded", "--kubelet-dir", "/var/lib/k0s/kubelet")
    assert str(c.kubelet_dir) == "/var/lib/k0s/kubelet"
    for bad, words in (("relative/dir", "absolute"), ("/", "must not be /")):
        with pytest.raises(ConfigError) as ei:
            cfg("--linstor-endpoint", "embedded", "--kubelet-dir", bad)
        assert "--kubelet-dir" in str(ei.value) and words in str(ei.value)
