"""deploy/: what can be checked without Docker or a cluster.

Every file parses; every audioprep container names the image the Dockerfile builds; the
Dockerfile installs the project the way the Makefile and deploy/README.md do;
deploy/prefect.yaml declares the deployment that flows/serve.py serves, pointing at the
real flow; the references between manifests resolve; and no file holds a secret.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import pathlib
import re
import shlex

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SECRET_TEMPLATE = K8S / "s3-secret.template.yaml"
PLACEHOLDER = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::[-?][^}]*)?\}$")
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-?]([^}]*))?\}")
SECRET_NAME = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key|^key$)", re.I)


# --- helpers -------------------------------------------------------------------------
def load_all(path: pathlib.Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> dict[str, list[dict]]:
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml"))}


def k8s_objects(kind: str | None = None) -> list[dict]:
    out = [d for name, docs in manifests().items() if name != "kustomization.yaml" for d in docs]
    return [d for d in out if kind is None or d["kind"] == kind]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def compose_default(value: str) -> str:
    """Resolve compose ``${VAR:-default}`` to its default (what an unset variable gives)."""
    return COMPOSE_VAR.sub(lambda m: m.group(2) or "", value)


def prefect_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


def the_deployment() -> dict:
    [d] = prefect_yaml()["deployments"]
    return d


def job_template() -> dict:
    return json.loads((K8S / "base-job-template.json").read_text())


def containers(obj) -> list[dict]:
    """Every container spec anywhere in a manifest (Pods, Deployments, DaskCluster specs)."""
    found: list[dict] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                found.extend(c for c in v if isinstance(c, dict))
            else:
                found.extend(containers(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(containers(v))
    return found


def dockerfile_lines() -> list[str]:
    """Dockerfile instructions with continuation lines joined, comments dropped."""
    out, cur = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cur = f"{cur} {line[:-1].strip()}" if line.endswith("\\") else f"{cur} {line}"
        if not line.endswith("\\"):
            out.append(cur.strip())
            cur = ""
    return out


def pip_installs(commands: list[str]) -> list[str]:
    """``pip install ...`` commands found in shell command lines (split on && and ;)."""
    found = []
    for cmd in commands:
        for part in re.split(r"&&|;", cmd):
            words = shlex.split(part)
            for i, w in enumerate(words):
                if w.endswith("pip") and words[i + 1 : i + 2] == ["install"]:
                    found.append(" ".join(["pip", *words[i + 1 :]]))
                    break
    return found


def normalized(install: str) -> tuple[str, ...]:
    """What a pip install installs: targets without extras, quiet/cache/editable flags, and
    without a constraints file (`make test` installs the declared lower bounds, the image the
    newest releases within the declared ranges, which `make test-latest` runs on)."""
    skip = {"--quiet", "-q", "--no-cache-dir", "-e", "--editable", "--upgrade", "-U"}
    words = [w for w in shlex.split(install)[2:] if w not in skip]
    words = [w for i, w in enumerate(words) if w not in ("-c", "--constraint") and words[i - 1 : i] not in (["-c"], ["--constraint"])]
    return tuple(re.sub(r"\[.*\]$", "", w) for w in words)


def image_built_by_dockerfile() -> str:
    """The tag of the documented build command, identical in the Dockerfile and the README."""
    pattern = re.compile(r"docker build -f deploy/Dockerfile -t (\S+) \.")
    in_dockerfile = pattern.findall((DEPLOY / "Dockerfile").read_text())
    in_readme = pattern.findall((DEPLOY / "README.md").read_text())
    assert in_dockerfile and set(in_dockerfile) == set(in_readme), (in_dockerfile, in_readme)
    [image] = set(in_dockerfile)
    return image


def pyproject_prefect_pin() -> str:
    """The oldest Prefect the project supports: its `==` pin, or the lower bound of its range."""
    text = (REPO / "pyproject.toml").read_text()
    [version] = re.findall(r'"prefect(?:==|>=)([0-9.]+)[",<]', text)
    return version


# --- every file parses ----------------------------------------------------------------
def test_every_deploy_file_parses():
    assert compose()["services"]
    assert prefect_yaml()["deployments"]
    assert job_template()["job_configuration"]["job_manifest"]["kind"] == "Job"
    found = manifests()
    assert {"daskcluster.yaml", "prefect-worker.yaml", "catalog-configmap.yaml", "kustomization.yaml"} <= set(found)
    for name, docs in found.items():
        assert docs, name
        for d in docs:
            assert d.get("apiVersion") and d.get("kind"), name
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], name


def test_prefect_yaml_is_valid_for_prefect_deploy():
    models = pytest.importorskip("prefect.cli.deploy._models")
    model = models.PrefectYamlModel.model_validate(prefect_yaml())
    [dep] = model.deployments
    for s in the_deployment()["schedules"]:
        models.RawScheduleConfig.model_validate(s)
    assert dep.work_pool is not None and dep.work_pool.name == "audioprep-pool"
    assert prefect_yaml()["prefect-version"] == pyproject_prefect_pin()


# --- one image ------------------------------------------------------------------------
def test_dockerfile_base_and_system_packages():
    lines = dockerfile_lines()
    assert lines[0] == "FROM python:3.11-slim"
    apt = [line for line in lines if "apt-get install" in line]
    assert apt and "libsndfile1" in apt[0]
    assert not any(line.startswith("ENTRYPOINT") for line in lines), "Prefect Kubernetes jobs pass the command as args"


def test_compose_services_use_the_image_the_dockerfile_builds():
    image = image_built_by_dockerfile()
    services = compose()["services"]
    builders = {n: s for n, s in services.items() if "build" in s}
    assert len(builders) == 1, "one service builds the image; the others reuse it"
    [(builder_name, builder)] = builders.items()
    assert (DEPLOY / builder["build"]["context"] / builder["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    audioprep_services = {n for n, s in services.items() if not s["image"].startswith("minio/")}
    assert {"prefect-server", "scheduler", "worker", "flow"} <= audioprep_services
    for name in audioprep_services:
        assert services[name]["image"] == builder["image"], name
        assert compose_default(services[name]["image"]) == image, name


def test_k8s_containers_use_the_image_the_dockerfile_builds():
    image = image_built_by_dockerfile()
    repo, tag = image.rsplit(":", 1)
    seen = []
    for obj in k8s_objects():
        for c in containers(obj):
            seen.append(obj["kind"])
            if c["name"] == "prefect-worker":
                # the launcher only: the official image of the same Prefect version as ours
                assert c["image"] == f"prefecthq/prefect:{pyproject_prefect_pin()}-python3.11-kubernetes"
            else:
                assert c["image"] == image, (obj["kind"], c["name"])
    assert seen.count("DaskCluster") == 2 and "Deployment" in seen
    [kust] = manifests()["kustomization.yaml"]
    assert kust["images"] == [{"name": repo, "newName": repo, "newTag": tag}]
    # the flow-run Jobs: the deployment's job variable and the work pool's default
    assert the_deployment()["work_pool"]["job_variables"]["image"] == image
    assert job_template()["variables"]["properties"]["image"]["default"] == image


def _make_recipe(target: str) -> list[str]:
    """The recipe lines of one Makefile target (the environment `make demo`/`make test` use)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(target))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        out.append(line)
    return out


def test_dockerfile_installs_the_project_like_the_makefile_and_the_readme():
    docker = pip_installs([line[4:] for line in dockerfile_lines() if line.startswith("RUN ")])
    make = pip_installs([line.strip().replace("$(BIN)/", "") for line in _make_recipe("$(STAMP):")])
    assert docker == ["pip install --upgrade pip", "pip install ."]
    # the Makefile installs the same project (editable, with dev extras) after upgrading pip
    assert [normalized(c) for c in docker] == [normalized(c) for c in make] == [("pip",), (".",)]
    readme = (DEPLOY / "README.md").read_text()
    for cmd in docker:
        assert f"\n{cmd}\n" in readme, f"deploy/README.md does not show `{cmd}`"
    top = REPO / "README.md"  # the project's README, when there is one, installs the same project
    if top.exists():
        shown = [normalized(c) for c in re.findall(r"pip install [^`\n]+", top.read_text())]
        assert (".",) in shown, f"README.md shows no `pip install` of the project: {shown}"


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        for p in prefixes:
            if fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pat[3:])):
                return True
    return False


def test_docker_build_context_keeps_what_the_image_needs():
    patterns = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    needed = ["pyproject.toml", "catalog.yaml", "scripts/make_demo_corpus.py", "flows/prepare.py", "flows/serve.py", "pipeline/__init__.py", "audioprep/cli.py"]
    for rel in needed:
        assert (REPO / rel).exists() and not _ignored(rel, patterns), rel
    for rel in [".venv/bin/python", ".git/HEAD", "data/demo.zarr", "pipeline/__pycache__/x.pyc", "deploy/.env"]:
        assert _ignored(rel, patterns), rel


# --- prefect.yaml and the served deployment -----------------------------------------
def test_prefect_yaml_entrypoint_resolves_to_the_prepare_flow(monkeypatch):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    from flows.prepare import prepare

    dep = the_deployment()
    monkeypatch.chdir(REPO)  # `prefect deploy` runs from the repository root
    loaded = load_flow_from_entrypoint(dep["entrypoint"])
    assert isinstance(loaded, Flow) and loaded.name == prepare.name == "prepare"
    assert loaded.fn.__qualname__ == prepare.fn.__qualname__
    params = inspect.signature(prepare.fn).parameters
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert set(dep["parameters"]) <= set(params), "parameters the flow does not take"
    assert required <= set(dep["parameters"]), "required flow parameters without a value"


def test_prefect_yaml_pull_step_exists():
    import importlib

    [step] = prefect_yaml()["pull"]
    [(fqn, args)] = step.items()
    module, name = fqn.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), name)
    inspect.signature(fn).bind(**args)
    assert args["directory"] == "/opt/audioprep"
    assert "WORKDIR /opt/audioprep" in dockerfile_lines()


def test_prefect_yaml_declares_what_audioprep_serve_serves(tmp_path, monkeypatch):
    from audioprep.cli import serve as serve_command
    from flows.serve import DEFAULT_CRON, DEFAULT_NAME, build_deployment

    dep = the_deployment()
    [schedule] = dep["schedules"]
    cli = inspect.signature(serve_command).parameters
    assert cli["cron"].default.default == DEFAULT_CRON == schedule["cron"]
    assert cli["name"].default.default == DEFAULT_NAME == dep["name"]

    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    served = build_deployment(REPO / "catalog.yaml")
    assert served.name == dep["name"]
    [s] = served.schedules
    assert (s.schedule.cron, s.schedule.timezone, s.active) == (schedule["cron"], schedule["timezone"], schedule["active"])
    assert served.concurrency_limit == dep["concurrency_limit"]["limit"]
    assert served.concurrency_options.collision_strategy.value == dep["concurrency_limit"]["collision_strategy"]
    assert set(served.parameters) == set(dep["parameters"])
    assert served.tags == dep["tags"]
    assert served.entrypoint.replace(".", "/").rsplit("/", 1) == dep["entrypoint"].replace(".py:", "/").rsplit("/", 1)


def _preloads(args: list[str]) -> list[str]:
    """The ``--preload`` modules of a ``dask worker`` command line; each must import here."""
    import importlib

    mods = [args[i + 1] for i, a in enumerate(args) if a == "--preload"]
    for m in mods:
        importlib.import_module(m)
    assert hasattr(importlib.import_module("pipeline.run.warmup"), "dask_setup")
    return mods


# --- compose ---------------------------------------------------------------------------
def test_compose_wires_prefect_dask_and_minio():
    services = compose()["services"]
    assert services["prefect-server"]["command"].startswith("prefect server start --host 0.0.0.0")
    # the same task-run recorder batching as the run's own local API
    from flows.server import TASK_RUN_RECORDER_BATCHING

    assert TASK_RUN_RECORDER_BATCHING.items() <= services["prefect-server"]["environment"].items()
    assert services["scheduler"]["command"].startswith("dask scheduler")
    worker, flow = services["worker"], services["flow"]
    assert worker["command"].startswith("dask worker tcp://scheduler:8786")
    assert _preloads(worker["command"].split()) == ["flows.prepare", "pipeline.run.warmup"]
    assert _preloads(services["scheduler"]["command"].split()) == ["flows.prepare"]
    assert worker["environment"]["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    assert worker["deploy"]["replicas"] >= 2
    assert flow["command"] == "audioprep run catalog.yaml --scheduler tcp://scheduler:8786"
    # the flow and every Dask worker report to the compose Prefect server
    api = flow["environment"]["PREFECT_API_URL"]
    assert api == worker["environment"]["PREFECT_API_URL"] == services["serve"]["environment"]["PREFECT_API_URL"]
    assert api == "http://prefect-server:4200/api" and "4200:4200" in services["prefect-server"]["ports"]
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert PLACEHOLDER.match(flow["environment"][var]) and PLACEHOLDER.match(worker["environment"][var])
    # MinIO and the one-shot bucket creation
    assert services["minio"]["image"].startswith("minio/minio")
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc") and "mc mb" in init["command"][0]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert flow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    for name, svc in services.items():
        assert set(svc.get("depends_on") or {}) <= set(services), name
    # the catalog the flow reads is the S3 example
    [mount] = flow["volumes"]
    src, dst, _ = mount.split(":")
    assert (DEPLOY / src).resolve() == DEPLOY / "catalog.s3.yaml" and dst == "/opt/audioprep/catalog.yaml"


# --- Kubernetes --------------------------------------------------------------------------
def test_daskcluster_and_prefect_worker():
    [cluster] = k8s_objects("DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    spec = cluster["spec"]
    [worker] = spec["worker"]["spec"]["containers"]
    [scheduler] = spec["scheduler"]["spec"]["containers"]
    assert worker["args"][:2] == ["dask", "worker"] and scheduler["args"][:2] == ["dask", "scheduler"]
    assert _preloads(worker["args"]) == ["flows.prepare", "pipeline.run.warmup"]
    assert _preloads(scheduler["args"]) == ["flows.prepare"]
    assert spec["worker"]["replicas"] >= 1
    assert {p["port"] for p in spec["scheduler"]["service"]["ports"]} == {8786, 8787}
    env = {c["metadata"]["name"]: c["data"] for c in k8s_objects("ConfigMap")}["audioprep-env"]
    # the operator names the scheduler Service <cluster>-scheduler
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{cluster['metadata']['name']}-scheduler:8786"
    assert env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    assert env["PREFECT_API_URL"].startswith("http://prefect-server:4200")
    assert {"configMapRef": {"name": "audioprep-env"}} in worker["envFrom"], "Dask workers must report to the same Prefect API"

    deployments = {d["metadata"]["name"]: d for d in k8s_objects("Deployment")}
    pod = deployments["prefect-worker"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    pool = the_deployment()["work_pool"]["name"]
    assert c["command"][-5:] == ["start", "--pool", pool, "--type", "kubernetes"]
    assert pod["serviceAccountName"] in {d["metadata"]["name"] for d in k8s_objects("ServiceAccount")}
    [binding] = k8s_objects("RoleBinding")
    assert binding["roleRef"]["name"] in {r["metadata"]["name"] for r in k8s_objects("Role")}
    assert {"kind": "ServiceAccount", "name": pod["serviceAccountName"]} in binding["subjects"]
    [jobs_rule] = [r for r in k8s_objects("Role")[0]["rules"] if "jobs" in r["resources"]]
    assert "create" in jobs_rule["verbs"]
    server = deployments["prefect-server"]["spec"]["template"]["spec"]["containers"][0]
    assert server["command"][:5] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    from flows.server import TASK_RUN_RECORDER_BATCHING

    assert TASK_RUN_RECORDER_BATCHING.items() <= {e["name"]: e["value"] for e in server["env"]}.items()


def _refs(obj, kinds=("configMapRef", "secretRef", "configMapKeyRef", "secretKeyRef", "configMap", "secret")) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in kinds and isinstance(v, dict) and ("name" in v or "secretName" in v):
                kind = "Secret" if k.lower().startswith("secret") else "ConfigMap"
                found.add((kind, v.get("name") or v.get("secretName")))
            else:
                found |= _refs(v, kinds)
    elif isinstance(obj, list):
        for v in obj:
            found |= _refs(v, kinds)
    return found


def test_k8s_references_resolve_and_kustomization_lists_every_manifest():
    defined = {(d["kind"], d["metadata"]["name"]) for d in k8s_objects()}
    refs = _refs(k8s_objects()) | _refs(job_template()["job_configuration"])
    assert ("Secret", "audioprep-s3") in refs and ("ConfigMap", "audioprep-catalog") in refs
    assert refs <= defined, refs - defined
    [kust] = manifests()["kustomization.yaml"]
    expected = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml" and p != SECRET_TEMPLATE)
    assert sorted(kust["resources"]) == expected, "the Secret template stays out: it holds placeholders"
    namespaces = {d["metadata"]["name"] for d in k8s_objects("Namespace")}
    assert kust["namespace"] in namespaces and the_deployment()["work_pool"]["job_variables"]["namespace"] in namespaces


def test_job_template_renders_the_flow_run_pod():
    from prefect.utilities.templating import apply_values

    template = job_template()
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    dep = the_deployment()
    rendered = apply_values(template["job_configuration"], {**defaults, **dep["work_pool"]["job_variables"]})
    pod = rendered["job_manifest"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"] == image_built_by_dockerfile()
    assert {"secretRef": {"name": "audioprep-s3"}} in c["envFrom"] and {"configMapRef": {"name": "audioprep-env"}} in c["envFrom"]
    [mount] = c["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    workdir = prefect_yaml()["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    # catalog_path (relative) + the pull step's directory = where the ConfigMap's catalog lies
    assert mount["mountPath"] == f"{workdir}/{dep['parameters']['catalog_path']}"
    assert volume["configMap"]["name"] == "audioprep-catalog" and mount["subPath"] in {"catalog.yaml"}
    assert pod["serviceAccountName"] in {d["metadata"]["name"] for d in k8s_objects("ServiceAccount")}


def test_example_catalog_is_the_configmap_and_validates_with_env_only():
    from pipeline.config.catalog import parse_catalog
    from pipeline.errors import CatalogError

    text = (DEPLOY / "catalog.s3.yaml").read_text()
    [cm] = [c for c in k8s_objects("ConfigMap") if c["metadata"]["name"] == "audioprep-catalog"]
    assert cm["data"]["catalog.yaml"] == text
    raw = yaml.safe_load(text)
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret-value", "AWS_ENDPOINT_URL": "http://minio:9000"}
    loaded = parse_catalog(raw, path="catalog.s3.yaml", env=env)
    assert loaded.catalog.output.store == "s3://audioprep/stores/demo.zarr"
    assert loaded.catalog.execution.scheduler == "tcp://scheduler:8786"
    assert "secret-value" not in json.dumps(loaded.redacted)
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw, path="catalog.s3.yaml", env={})
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value)


# --- no literal secrets ----------------------------------------------------------------
def _literal_secrets(obj, path: str = "") -> list[str]:
    """Values under secret-looking names that are not placeholders or references."""
    bad: list[str] = []
    if isinstance(obj, dict):
        if {"name", "value"} <= set(obj) and SECRET_NAME.search(str(obj["name"])):  # k8s env entry
            if not (isinstance(obj["value"], str) and PLACEHOLDER.match(obj["value"])):
                bad.append(f"{path}.{obj['name']}")
        for k, v in obj.items():
            if k in ("secretKeyRef", "configMapKeyRef", "secretRef"):
                continue  # references name a key, they hold no value
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and SECRET_NAME.search(str(k)) and k != "name":
                if not (isinstance(v, str) and (PLACEHOLDER.match(v) or v == "")):
                    bad.append(f"{path}.{k}")
            bad.extend(_literal_secrets(v, f"{path}.{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            bad.extend(_literal_secrets(v, f"{path}[{i}]"))
    return bad


def test_no_literal_secrets_in_deploy():
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.name != ".env"]
    for p in files:
        text = p.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), p
        assert "minioadmin" not in text, f"{p}: MinIO's default credentials"
        if p.suffix in (".yaml", ".json"):
            docs = [json.loads(text)] if p.suffix == ".json" else load_all(p)
            assert not _literal_secrets(docs), (p, _literal_secrets(docs))
    # the Secret is a template of placeholders; the env example leaves every value empty
    [secret] = load_all(SECRET_TEMPLATE)
    assert secret["stringData"] and all(PLACEHOLDER.match(v) for v in secret["stringData"].values())
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#") and SECRET_NAME.search(line.split("=")[0]):
            assert line.split("=", 1)[1].strip() == "", line
    assert not any(re.match(r"ENV\s.*(SECRET|PASSWORD|ACCESS_KEY)", line) for line in dockerfile_lines())


def test_the_secret_check_catches_a_literal():
    assert _literal_secrets({"environment": {"AWS_SECRET_ACCESS_KEY": "abc123"}})
    assert _literal_secrets([{"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc123"}]}])
    assert not _literal_secrets({"environment": {"AWS_SECRET_ACCESS_KEY": "${AWS_SECRET_ACCESS_KEY:?set it}"}})
    assert not _literal_secrets({"valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}})
