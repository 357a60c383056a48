"""modelgate's command line: validate a SavedModel, or try the whole thing on a sample model.

Exit codes: 0 every check passed, 1 a check failed, 2 bad input, usage, or a stage that could not run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Literal, get_args, get_origin

from modelgate.errors import ModelgateError
from modelgate.service import prefect_server  # the standard library only: it starts before the heavy imports

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's own code for a command ended by SIGINT
EXIT_CODES = {"passed": EXIT_PASSED, "failed": EXIT_FAILED, "error": EXIT_ERROR}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description="The gate between training and serving.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own logs")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="validate one SavedModel")
    validate.add_argument("source", metavar="SOURCE", help="SavedModel directory, or models:/NAME/VERSION or @ALIAS")
    _add_validation_options(validate)

    verify = commands.add_parser("verify", help="check a signed version's files against its signature: exit 0, "
                                 "or 1 naming each file changed, added or missing")
    verify.add_argument("source", metavar="SOURCE",
                        help="a signed folder, a TF Serving base path, or models:/NAME/VERSION or @ALIAS")
    anchor = verify.add_mutually_exclusive_group(required=True)
    anchor.add_argument("--public-key", metavar="PEM", help="the signing key's public half")
    anchor.add_argument("--certificate-chain", metavar="PEM",
                        help="the certificates that issued the signing certificate (certificate mode)")
    verify.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///mlflow.db)")

    serve = commands.add_parser("serve", help="serve both deployments from this process (no worker needed)")
    serve.add_argument("--models", metavar="NAME,NAME", default="", help="registered models the schedule watches")
    serve.add_argument("--base-paths", metavar="DIR,DIR", default="", help="TF Serving base paths the schedule watches")
    serve.add_argument("--cron", default="*/15 * * * *", help="schedule of validate-new-versions")
    serve.add_argument("--settings", metavar="JSON", default="{}", help="validation request fields for each version")
    serve.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    serve.add_argument("--limit", type=int, default=2, help="flow runs at once")

    from modelgate.service.stack import add_arguments as add_up_arguments

    add_up_arguments(commands.add_parser("up", help="a local stack: Prefect's and MLflow's servers with their UIs, "
                                         "and both deployments served; prints the URLs, Ctrl-C stops it all"))

    # Its options are `prefect worker start`'s, --help included: main passes them on.
    commands.add_parser("worker", add_help=False, help="`prefect worker start` with a spare keeper beside it: "
                        "validations after the first find their frameworks imported")

    relay = commands.add_parser("relay", help="turn signed MLflow registry webhooks into Prefect events")
    relay.add_argument("--host", default=os.environ.get("MODELGATE_RELAY_HOST", "127.0.0.1"),
                       help="address to listen on (default: $MODELGATE_RELAY_HOST, else 127.0.0.1)")
    relay.add_argument("--port", type=int, default=os.environ.get("MODELGATE_RELAY_PORT", "8765"),
                       help="(default: $MODELGATE_RELAY_PORT, else 8765)")
    relay.add_argument("--certfile", default=os.environ.get("MODELGATE_RELAY_CERTFILE"),
                       help="PEM certificate (chain): serve HTTPS, as MLflow requires by default "
                            "(default: $MODELGATE_RELAY_CERTFILE)")
    relay.add_argument("--keyfile", default=os.environ.get("MODELGATE_RELAY_KEYFILE"),
                       help="its PEM private key, unless the certfile holds it (default: $MODELGATE_RELAY_KEYFILE)")
    _add_secret_env(relay)

    webhook = commands.add_parser("webhook", help="the MLflow webhook that feeds the relay")
    actions = webhook.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="create or update the MLflow webhook for the relay")
    register.add_argument("--url", default=os.environ.get("MODELGATE_RELAY_URL"),
                          help="the relay's URL as the MLflow server reaches it (default: $MODELGATE_RELAY_URL)")
    test = actions.add_parser("test", help="have MLflow send its test event and say whether the relay verified it")
    for action in (register, test):
        action.add_argument("--tracking-uri", metavar="URI", default=os.environ.get("MLFLOW_TRACKING_URI"),
                            help="the MLflow tracking server (default: $MLFLOW_TRACKING_URI)")
        action.add_argument("--name", default="modelgate-relay", help="the webhook's name in MLflow")
    _add_secret_env(register)
    certificate = actions.add_parser("certificate", help="make the relay's TLS certificate and MLflow's trust store")
    certificate.add_argument("--out", metavar="DIR", default=os.environ.get("MODELGATE_RELAY_TLS_DIR"),
                             help="where to write them (default: $MODELGATE_RELAY_TLS_DIR)")
    certificate.add_argument("--hostname", action="append", required=True,
                             help="a name (or IP address) MLflow reaches the relay by (repeatable)")

    demo = commands.add_parser("demo", help="build a small sample SavedModel and validate it")
    demo.add_argument("--model-dir", default=None, help="where to write the sample model (default: a temp dir)")
    _add_validation_options(demo)
    return parser


def _add_secret_env(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret-env", default="MODELGATE_WEBHOOK_SECRET",
                        help="environment variable holding the webhook's secret (never on the command line)")


def _add_validation_options(parser: argparse.ArgumentParser) -> None:
    from modelgate.request import default_targets
    from modelgate.targets import registry

    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line (errors still go to stderr)")
    shown.add_argument("--json", action="store_true", help="print the report as JSON on stdout, and nothing else there")
    parser.add_argument("--signature", metavar="KEY", help="signature key (default: serving_default)")
    parser.add_argument("--tag", metavar="TAG", action="append", help="tag of the MetaGraph (repeat or comma-separate)")
    parser.add_argument("--version", type=int, metavar="N", help="version folder of a TF Serving base path (default: latest)")
    parser.add_argument("--inputs", metavar="FILE", help="inputs: .npz keyed by input name, or a TFRecord of tf.Examples")
    parser.add_argument("--contract", metavar="FILE", help="expected contract (YAML or JSON) the signature must match")
    parser.add_argument("--baseline", "--previous", metavar="SOURCE", dest="baseline",
                        help="version to compare with: path, models:/NAME/VERSION or an alias (default: champion)")
    targets = registry()
    parser.add_argument("--targets", metavar="T,T,...",
                        help=f"conversion targets: {', '.join(sorted(targets))}, all, or none "
                        f"(default: {', '.join(default_targets()) or 'none'})")
    parser.add_argument("--optional-target", metavar="NAME", action="append",
                        help="report this target's failures without failing on them (repeatable)")
    parser.add_argument("--atol", type=float, help="absolute tolerance of every target against TensorFlow")
    parser.add_argument("--rtol", type=float, help="relative tolerance of every target against TensorFlow")
    parser.add_argument("--comparison-batches", type=int, metavar="N",
                        help="seeded batches every target is compared on (default 8)")
    parser.add_argument("--localise", action="store_true",
                        help="find where each target's error starts even when it passes (a failing one always is)")
    parser.add_argument("--remediation-budget-s", type=float, metavar="SECONDS",
                        help="time for trying other conversions of each failing target (default 180; 0: none)")
    parser.add_argument("--remediation", metavar="TARGET=MODE", action="append",
                        help="apply: a passing variant of the target stands as it; report: it is only reported "
                        "(default auto: apply for optional targets, report for required ones; repeatable)")
    parser.add_argument("--output-atol", metavar="NAME=X", action="append", help="atol for one output (repeatable)")
    parser.add_argument("--output-rtol", metavar="NAME=X", action="append", help="rtol for one output (repeatable)")
    parser.add_argument("--batch-size", type=int, help="dynamic batch dimension of synthetic inputs")
    parser.add_argument("--value-range", metavar="NAME=LO:HI", action="append",
                        help="range of a synthetic input or tf.Example feature; LO:HI for the rest (repeatable)")
    parser.add_argument("--no-benchmark", action="store_true", help="skip latency measurement")
    parser.add_argument("--benchmark-batch-sizes", metavar="N,N,...", help="batch sizes (default: a sweep)")
    parser.add_argument("--max-batch-size", type=int, help="largest batch size of the sweep (default 32)")
    parser.add_argument("--benchmark-budget-s", type=float, metavar="SECONDS",
                        help="time for each runtime's sweep on each device (default 30)")
    parser.add_argument("--runtimes", metavar="R,R,...",
                        help="runtimes to benchmark: tensorflow, keras, onnxruntime, litert, openvino (default: all)")
    parser.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: one per core)")
    parser.add_argument("--no-gpu", action="store_true", help="do not benchmark on a GPU even if one is present")
    parser.add_argument("--allow-op", metavar="OP", action="append", help="allow an op the op scan refuses (repeatable)")
    parser.add_argument("--op-library", metavar="MODULE", action="append",
                        help="import this package (e.g. tensorflow_text) to register its custom ops (repeatable)")
    parser.add_argument("--require-sandbox", action="store_true",
                        help="run no model code without the OS sandbox (Landlock): an error, not a warning")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit for each model stage")
    parser.add_argument("--memory-limit-mb", type=int, help="memory limit for each model stage")
    parser.add_argument("--report", metavar="PATH", help="report path (default: modelgate-report.json)")
    parser.add_argument("--output-dir", metavar="DIR", help="working files (default: modelgate-out)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    parser.add_argument("--register-as", metavar="NAME", help="register a path source under this registered model")
    parser.add_argument("--alias", help="registry alias set when the validation passes and the version is signed "
                        "(default: validated)")
    parser.add_argument("--signing-key", metavar="PEM",
                        help="elliptic-curve private key: a version that passes is signed before its alias moves")
    parser.add_argument("--signing-certificate", metavar="PEM",
                        help="the key's certificate, its chain after it: sign in model-signing's certificate mode")
    for name, declared in sorted(targets.items()):
        fields = declared.options.model_fields
        if fields:
            group = parser.add_argument_group(f"{name} options", declared.description)
            for field, info in fields.items():
                group.add_argument(_option_flag(name, field), dest=_option_dest(name, field), metavar=None
                                   if _option_kind(info) is bool else field.upper(), **_option_argument(info))


def _option_flag(target: str, field: str) -> str:
    return f"--{target}-{field.replace('_', '-')}"


def _option_dest(target: str, field: str) -> str:
    return f"option:{target}:{field}"


def _option_kind(info):
    return info.annotation if info.annotation in (bool, int, float, str) else get_origin(info.annotation)


def _option_argument(info) -> dict:
    """A target option as argparse takes it, from its pydantic field: a switch, choices, a number, a list."""
    kind = _option_kind(info)
    described = f"{info.description} (default: {info.default})" if info.default not in ([], "", None) else info.description
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction, "default": None, "help": info.description}
    if kind is Literal:
        return {"choices": get_args(info.annotation), "help": described}
    if kind is list:
        return {"type": _csv, "help": f"{info.description} (comma-separated)"}
    return {"type": kind, "help": described}


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _request_fields(args: argparse.Namespace, source: str) -> dict:
    """The request of these flags, section by section; a flag left out leaves the request's default."""
    tags = [t for value in args.tag for t in value.split(",") if t] if args.tag else None
    sections = {
        "model": {"signature": args.signature, "tags": tags, "version": args.version, "op_libraries": args.op_library},
        "inputs": {"path": args.inputs, "batch_size": args.batch_size,
                   "value_range": _value_ranges(args.value_range) if args.value_range else None},
        "checks": {"contract_path": args.contract, "atol": args.atol, "rtol": args.rtol,
                   "output_atol": _per_output(args.output_atol, "--output-atol"),
                   "output_rtol": _per_output(args.output_rtol, "--output-rtol"),
                   "comparison_batches": args.comparison_batches, "allow_ops": args.allow_op,
                   "localise": True if args.localise else None, "remediation_budget_s": args.remediation_budget_s},
        "benchmark": {
            "enabled": False if args.no_benchmark else None, "max_batch_size": args.max_batch_size,
            "intra_op_threads": args.threads, "budget_s": args.benchmark_budget_s,
            "gpu": False if args.no_gpu else None, "runtimes": _csv(args.runtimes) if args.runtimes else None,
            "batch_sizes": [int(n) for n in _csv(args.benchmark_batch_sizes)]
            if args.benchmark_batch_sizes is not None else None,
        },
        "limits": {"timeout_s": args.timeout, "memory_limit_mb": args.memory_limit_mb,
                   "require_sandbox": True if args.require_sandbox else None},
        "mlflow": {"tracking_uri": args.tracking_uri, "register_as": args.register_as, "alias": args.alias,
                   "signing_key": args.signing_key, "signing_certificate": args.signing_certificate},
        "output": {"report_path": args.report, "output_dir": args.output_dir},
    }
    fields = {"source": source, "baseline": args.baseline, "targets": _target_fields(args)}
    fields = _given(fields)
    for name, settings in sections.items():
        if settings := _given(settings):
            fields[name] = settings
    return fields


def _given(fields: dict) -> dict:
    return {key: value for key, value in fields.items() if value is not None}


def _serve(args: argparse.Namespace, console) -> int:
    import json

    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        console.error(f"--settings is not JSON: {exc}")
        return EXIT_ERROR
    from flows.serve import serve_deployments

    models, base_paths = _csv(args.models), _csv(args.base_paths)
    watched = ", ".join(models + base_paths) or "nothing"
    console.note(f"serving validate-savedmodel and validate-new-versions (watching {watched})")
    serve_deployments(models, base_paths, settings, cron=args.cron, tracking_uri=args.tracking_uri, limit=args.limit)
    return EXIT_PASSED


def _worker(options: list[str]) -> int:
    """Prefect's worker, with a spare keeper beside it for the flow runs it starts."""
    from prefect.cli import app

    from modelgate.execution.spare_keeper import keep_spares

    sys.argv = ["prefect", "worker", "start", *options]  # where Prefect's command line reads its own
    with keep_spares():
        app()
    return EXIT_PASSED


def _relay(args: argparse.Namespace, console) -> int:
    import ssl

    from modelgate.service.relay import make_server

    secret = os.environ.get(args.secret_env, "")
    try:
        server = make_server(secret, args.host, args.port, args.certfile, args.keyfile)
    except (ValueError, OSError, ssl.SSLError) as exc:
        console.error(f"relay: {exc}" + ("" if secret else f" (secret from ${args.secret_env})"))
        return EXIT_ERROR
    console.note(f"relaying MLflow webhooks from {server.url} to Prefect events")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
    return EXIT_PASSED


def _webhook(args: argparse.Namespace, console) -> int:
    """register: exit 0 once the webhook is in place; test: 0 when the relay verified MLflow's test event, else 1."""
    if args.action == "certificate":
        return _relay_certificate(args, console)
    if not args.tracking_uri:
        console.error("webhook: --tracking-uri (or $MLFLOW_TRACKING_URI) names the MLflow server")
        return EXIT_ERROR
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from modelgate.service import webhooks

    client = MlflowClient(args.tracking_uri, registry_uri=args.tracking_uri)
    try:
        if args.action == "register":
            if not args.url:
                console.error("webhook register: --url (or $MODELGATE_RELAY_URL) is the relay's URL")
                return EXIT_ERROR
            done, hook = webhooks.register(client, args.url, os.environ.get(args.secret_env, ""), args.name)
            console.note(f"{done} MLflow webhook {hook.name} ({hook.webhook_id}): model_version.created to {hook.url}")
            return EXIT_PASSED
        verified, message = webhooks.test(client, args.name)
    except (webhooks.WebhookError, MlflowException) as exc:
        console.error(f"webhook {args.action}: {str(exc).splitlines()[0]}")
        return EXIT_ERROR
    if verified:
        console.note(message)
        return EXIT_PASSED
    console.error(message)
    return EXIT_FAILED


def _relay_certificate(args: argparse.Namespace, console) -> int:
    from modelgate.service.relay_tls import make_relay_tls

    if not args.out:
        console.error("webhook certificate: --out (or $MODELGATE_RELAY_TLS_DIR) is where to write it")
        return EXIT_ERROR
    try:
        tls, issued = make_relay_tls(Path(args.out), args.hostname)
    except (ValueError, OSError) as exc:
        console.error(f"webhook certificate: {exc}")
        return EXIT_ERROR
    console.note(f"{'issued' if issued else 'kept'} {tls.certfile} for {', '.join(args.hostname)}; "
                 f"MLflow trusts it with PYTHONPATH={tls.trust}")
    return EXIT_PASSED


def _verify(args: argparse.Namespace, console) -> int:
    from modelgate.tracking.registry import signed_folder
    from modelgate.tracking.signing import TrustAnchor, verify

    anchor = TrustAnchor(public_key=args.public_key and Path(args.public_key),
                         certificate_chain=args.certificate_chain and Path(args.certificate_chain))
    with tempfile.TemporaryDirectory(prefix="modelgate-verify-") as scratch:
        try:
            anchor.checked()  # a key that cannot verify is a usage error, before any download
            result = verify(signed_folder(args.source, args.tracking_uri, Path(scratch)), anchor)
        except ModelgateError as exc:
            console.error(str(exc))
            return EXIT_ERROR
    shown = args.source if args.source.startswith("models:/") else str(result.folder)
    if result.valid:
        console.note(f"verified: {shown}: every file matches its signature; attested verdict: {result.verdict}")
        return EXIT_PASSED
    console.note(f"not verified: {shown}")
    for line in result.lines():
        console.note(f"  {line}")
    return EXIT_FAILED


def _per_output(settings: list[str] | None, option: str) -> dict[str, float] | None:
    """--output-atol logits=1e-3 (repeatable), as {"logits": 1e-3}."""
    if not settings:
        return None
    tolerances = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        try:
            tolerances[name] = float(value)
        except ValueError:
            raise ValueError(f"{option} expects NAME=NUMBER, found '{setting}'") from None
        if not name:
            raise ValueError(f"{option} expects NAME=NUMBER, found '{setting}'")
    return tolerances


def _value_ranges(settings: list[str]) -> dict[str, list[float]]:
    """--value-range token_ids=0:999 --value-range 0:1 as {"token_ids": [0, 999], "": [0, 1]}."""
    ranges = {}
    for setting in settings:
        name, _, bounds = setting.rpartition("=")
        try:
            low, high = (float(bound) for bound in bounds.split(":"))
        except ValueError:
            raise ValueError(f"--value-range expects NAME=LO:HI or LO:HI, found '{setting}'") from None
        ranges[name] = [low, high]
    return ranges


def _target_fields(args: argparse.Namespace) -> dict:
    """--targets, --optional-target and each target's option flags as the request's targets mapping."""
    from modelgate.request import default_targets, target_mapping

    if args.targets is None:
        names = default_targets()
    else:
        names = [] if args.targets.strip() == "none" else _csv(args.targets)
    targets = target_mapping(names)
    for name in args.optional_target or []:
        if name not in targets:
            raise ValueError(f"--optional-target {name}: {name} is not among the targets asked")
        targets[name]["requirement"] = "optional"
    for setting in args.remediation or []:
        name, _, mode = setting.partition("=")
        if name not in targets:
            raise ValueError(f"--remediation {setting}: {name} is not among the targets asked")
        if mode not in ("auto", "apply", "report"):
            raise ValueError(f"--remediation {setting}: the mode is auto, apply or report")
        targets[name]["remediation"] = mode
    for dest, value in vars(args).items():
        if not dest.startswith("option:") or value is None:
            continue
        _, name, field = dest.split(":")
        if name not in targets:
            raise ValueError(f"{_option_flag(name, field)}: {name} is not among the targets asked")
        targets[name].setdefault("options", {})[field] = value
    return targets


def _output_mode(args: argparse.Namespace) -> str:
    return "json" if args.json else "quiet" if args.quiet else "full"


def _checked_request(args: argparse.Namespace, model_dir: str, built_here: bool):
    """The request of the command line, and each check of it that needs nothing started: the options, the
    signing key, and the files named (the SavedModel, the inputs, the contract). A usage error is answered
    here, before Prefect, MLflow or a model process starts, and creates no MLflow run and no report.
    `built_here`: the demo's model, which does not exist yet."""
    from modelgate.errors import InputsError
    from modelgate.model.model_source import resolve_model_source
    from modelgate.request import ValidationRequest

    request = ValidationRequest(**_request_fields(args, model_dir))
    if request.mlflow.signing_key and not (request.mlflow.register_as or request.source.startswith("models:/")):
        raise ValueError("--signing-key signs a registry version: add --register-as NAME, or validate models:/...")
    if request.mlflow.signing_key:
        from modelgate.tracking.signing import signer_anchor

        with tempfile.TemporaryDirectory() as scratch:  # a key that cannot sign is a usage error, before any work
            signer_anchor(request.mlflow.signing_key, request.mlflow.signing_certificate, Path(scratch))
    if not built_here and not request.source.startswith("models:/"):
        resolve_model_source(request.source, request.model.version_number)  # what the inspect stage would say
    if request.inputs.path and not Path(request.inputs.path).is_file():
        raise InputsError(f"inputs file {request.inputs.path} does not exist")
    if request.checks.contract_path and not Path(request.checks.contract_path).is_file():
        raise ValueError(f"contract file {request.checks.contract_path} does not exist")
    return request


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, passed_on = parser.parse_known_args(argv)
    if passed_on and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(passed_on)}")
    if args.command == "worker":
        return _worker(passed_on)  # Prefect's worker as it is, logging included
    request = None
    if args.command in ("validate", "demo"):
        from pydantic import ValidationError

        from modelgate.reporting.console import Console

        console = Console(_output_mode(args))
        if args.command == "demo":
            model_dir = args.model_dir or str(Path(tempfile.mkdtemp(prefix="modelgate-sample-")) / "sample_model")
        else:
            model_dir = args.source
        try:
            request = _checked_request(args, model_dir, built_here=args.command == "demo")
        except ValidationError as exc:
            first = exc.errors()[0]
            console.error(f"invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}")
            return EXIT_ERROR
        except (ValueError, ModelgateError) as exc:
            console.error(str(exc))
            return EXIT_ERROR
    # Registered first, so run last: the interpreter's final garbage collection would walk every object that
    # Prefect, MLflow and the frameworks made (seconds on a loaded machine), all about to be freed with the process.
    atexit.register(gc.freeze)
    # `kill -USR1` prints every thread's stack to stderr: where a command that seems stuck is waiting. (A stderr
    # without a file descriptor, main() called in-process under a capture, has nowhere to print them.)
    with contextlib.suppress(ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    prefect_server.allow_a_slow_start()
    from modelgate.execution.quiet import quiet_frameworks

    quiet_frameworks(verbose=args.debug)  # before the server starts: it reads the same settings
    server = None
    if args.command in ("validate", "demo"):
        server = prefect_server.start_ephemeral_server()  # before the imports below, which its start-up overlaps
    if request is None:
        from modelgate.reporting.console import Console

        console = Console()
    if args.command == "serve":
        return _serve(args, console)
    if args.command == "up":
        from modelgate.service.stack import up

        return up(args, console)
    if args.command == "relay":
        return _relay(args, console)
    if args.command == "webhook":
        return _webhook(args, console)
    if args.command == "verify":
        return _verify(args, console)
    if args.command == "demo":
        console.note(f"building a sample SavedModel in {model_dir}")
        from modelgate.execution.quiet import stderr_to
        from modelgate.model.samples import build_sample_model

        # Building the model logs a warning through the logging module's root logger, which gives the root a
        # handler of its own (basicConfig's): Prefect would then leave the root alone and every run log line
        # would reach stderr. The root keeps only the handlers it had.
        handlers = list(logging.getLogger().handlers)
        with stderr_to(os.devnull):
            build_sample_model(model_dir)
        logging.getLogger().handlers[:] = handlers
    from modelgate.reporting import recorder

    recorder.add_listener(console)
    try:
        from flows.validate import validate

        console.note(f"flow runs on {prefect_server.connect(server)}")
        report = validate(request)
    except KeyboardInterrupt:
        console.error(f"interrupted; the report so far is in {request.output.report_path}")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        console.error(f"validation stopped: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    finally:
        recorder.remove_listener(console)
    console.verdict(report)
    return EXIT_CODES[report.status]


if __name__ == "__main__":
    sys.exit(main())
