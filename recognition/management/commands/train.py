"""Train a model from a manifest CSV or a labelled batch, and register it in the model registry.

    manage.py train --manifest ../shared/data/accent-mini/manifest.csv --family speaker_head \\
        --name accent-native --label-map native_english=native,mandarin_l1=non_native,other_l1=non_native \\
        --out models/checkpoints/accent-native.pt [--card docs/models/accent-native.md] [any training option]
    manage.py train --manifest ... --family speaker_head --name x --cv-folds 5 [options]   # compare configurations
    manage.py train --batch 12 [--family whisper_probe] --name my-model [--label-map a=b,...] [--epochs 20] [--robustness]

With ``--manifest`` every option of ``python -m workers.pipeline.training`` is accepted (the same
function trains); the checkpoint is then registered. With ``--batch`` the batch's labelled
recordings are read from storage and the checkpoint is stored in storage.
"""
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from recognition.errors import ServiceError


class Command(BaseCommand):
    help = __doc__.split("\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, help="train on this batch's labelled recordings")
        parser.add_argument("--default", action="store_true", help="make the new version its model's default")

    def create_parser(self, prog_name, subcommand, **kwargs):
        """Options this command does not know go to the training CLI untouched (also via call_command)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def parse_args(args=None, namespace=None):
            namespace, unknown = parser.parse_known_args(args, namespace)
            namespace.rest = unknown
            return namespace

        parser.parse_args = parse_args
        return parser

    def handle(self, *args, batch=None, default=False, rest=(), **options):
        """``rest``: the training options, in order (see ``python -m workers.pipeline.training --help``)."""
        rest = list(rest)
        if batch is not None:
            return self._train_batch(batch, rest, default)
        if "--manifest" in rest and "--cv-folds" in rest:  # compare a configuration: nothing to register
            from workers.pipeline import training

            if training.main(rest):
                raise CommandError("cross-validation failed")
            return None
        if "--manifest" not in rest or "--out" not in rest:
            raise CommandError("Give --batch ID, or --manifest CSV with --out PATH.pt (and --family, --name).")
        from recognition.services.models import model_version_from_sidecar
        from recognition.services.training import code_version
        from workers.pipeline import training

        code = training.main(rest)
        if code:
            raise CommandError(f"training failed ({code})")
        out = Path(rest[rest.index("--out") + 1]).resolve()
        meta = json.loads(out.with_suffix(".json").read_text())
        models_dir = Path(settings.MODELS_DIR).resolve()
        checkpoint = out.name if out.parent == models_dir else str(out)
        mv = model_version_from_sidecar(meta, checkpoint=checkpoint, make_default=default, code_version=code_version())
        self.stdout.write(self.style.SUCCESS(f"registered {mv} (default: {mv.is_default})"))

    def _train_batch(self, batch_id: int, rest: list[str], default: bool) -> None:
        import argparse

        from recognition import services
        from recognition.models import Batch
        from recognition.services.training import train_job_finish, train_job_run

        parser = argparse.ArgumentParser(prog="manage.py train --batch ID")
        from models.registry import default_train_family

        parser.add_argument("--family", default=default_train_family())
        parser.add_argument("--name", required=True)
        parser.add_argument("--label-map", default=None)
        parser.add_argument("--epochs", type=int, default=30)
        parser.add_argument("--robustness", nargs="?", const="", default=None, metavar="CONDITIONS",
                            help="score the model on degraded copies of its test clips (comma-separated; alone: the default set)")
        args = parser.parse_args(rest)
        batch = Batch.objects.filter(pk=batch_id).first()
        if batch is None:
            raise CommandError(f"no batch {batch_id}")
        label_map = dict(kv.split("=", 1) for kv in args.label_map.split(",")) if args.label_map else None
        params = {"family": args.family, "name": args.name, "epochs": args.epochs}
        if label_map:
            params["label_map"] = label_map
        if args.robustness is not None:
            params["robustness"] = [n for n in args.robustness.split(",") if n] or True
        job = services.job_submit(owner=batch.owner, kind="train", batch=batch, params=params, enqueue=False)
        services.chunk_start(chunk_id=job.chunks.get().pk, worker="manage.py train")
        job.refresh_from_db()
        from workers.pipeline.training import tqdm_progress

        try:
            mv = train_job_run(job=job, progress=tqdm_progress())
        except ServiceError as exc:
            train_job_finish(job_id=job.pk, model_version=None, error=exc.message)
            raise CommandError(exc.message) from exc
        train_job_finish(job_id=job.pk, model_version=mv)
        if default:
            services.model_version_make_default(model_version=mv)
        self.stdout.write(self.style.SUCCESS(f"registered {mv}"))
