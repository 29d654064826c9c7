"""Run by test_vector_index.py in a subprocess against a PostgreSQL with pgvector (migrated).

Fills the database with embeddings of two owners and two model versions, then reports what
similarity search returns through the HNSW index and through the exact numpy path, the query plan,
and what the side table holds after a delete, a re-embed and a drop / enable cycle. Prints JSON.
"""
import json
import os
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "accentsite.settings")
django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from recognition import selectors, vectorindex  # noqa: E402
from recognition.models import Embedding, Job, ModelVersion, Recording, RecordingResult  # noqa: E402


def recording(owner, name):
    return Recording.objects.create(owner=owner, file=f"recordings/{name}", original_filename=name, sha256=uuid.uuid4().hex,
                                    format="wav", duration_s=3.0)


def embed(owner, mv, vectors):
    job = Job.objects.create(owner=owner, kind="embed", model_version=mv, status="succeeded", total=len(vectors))
    for rec, v in vectors.items():
        v = np.asarray(v, dtype=np.float64)
        v = v / np.linalg.norm(v)
        result = RecordingResult.objects.create(job=job, recording=rec, status="succeeded")
        Embedding.objects.create(result=result, recording=rec, model_version=mv, checkpoint_sha256="0" * 64, dim=len(v),
                                 vector=v.tolist())


def ann_rows():
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {vectorindex.TABLE}")
        return cur.fetchone()[0]


def search(user, rec, mv, k, backend):
    settings.SIMILARITY_BACKEND = backend
    return [[r.pk, round(sim, 5)] for r, sim in selectors.similar_recordings(user=user, recording=rec, model_version=mv, k=k)]


rng = np.random.default_rng(7)
User = get_user_model()
a = User.objects.create_user(username="vec-a", password="pw-123456789")
b = User.objects.create_user(username="vec-b", password="pw-123456789")
m16 = ModelVersion.objects.create(name="vec-16", version="1", family="cnn", task="embed", labels=[])
m8 = ModelVersion.objects.create(name="vec-8", version="1", family="cnn", task="embed", labels=[])
mine = [recording(a, f"a{i}.wav") for i in range(120)]
theirs = [recording(b, f"b{i}.wav") for i in range(30)]
vec16 = {r: rng.standard_normal(16) for r in mine + theirs}
vec16[mine[1]] = vec16[mine[0]] * 2.0  # same direction as a0: its nearest neighbour, similarity 1
vec16[theirs[0]] = vec16[mine[0]] * 3.0  # another owner's copy of a0: must never be returned to a
embed(a, m16, {r: vec16[r] for r in mine})
embed(b, m16, {r: vec16[r] for r in theirs})
embed(a, m8, {r: rng.standard_normal(8) for r in mine[:40]})
# a re-embed of a5 with a new vector: the newest embedding is the one searched
vec16[mine[5]] = rng.standard_normal(16)
embed(a, m16, {mine[5]: vec16[mine[5]]})

out = {"backend": vectorindex.backend(), "rows": ann_rows(), "expected_rows": 120 + 30 + 40}
out["pairs"] = []
for rec, mv, k in [(mine[0], m16, 10), (mine[5], m16, 10), (mine[17], m16, 25), (mine[3], m8, 10), (mine[60], m16, 119)]:
    out["pairs"].append({"anchor": rec.pk, "model": mv.name, "k": k, "hnsw": search(a, rec, mv, k, "auto"),
                         "exact": search(a, rec, mv, k, "exact")})
out["a1"], out["b0"] = mine[1].pk, theirs[0].pk
out["theirs"] = [r.pk for r in theirs]

with connection.cursor() as cur:
    cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [vectorindex.TABLE])
    out["indexes"] = [r[0] for r in cur.fetchall()]
    cur.execute("SET enable_seqscan = off")
    q = vectorindex._literal(vec16[mine[0]] / np.linalg.norm(vec16[mine[0]]))
    cur.execute("EXPLAIN " + vectorindex.nearest_sql(16), [q, m16.pk, a.pk, mine[0].pk, q, 10])
    out["plan"] = "\n".join(r[0] for r in cur.fetchall())
    cur.execute("RESET enable_seqscan")

mine[2].delete()
out["rows_after_delete"] = ann_rows()
vectorindex.disable()
settings.SIMILARITY_BACKEND = "auto"
out["backend_after_drop"] = vectorindex.backend()
out["enable"] = vectorindex.enable()
out["rows_after_enable"] = ann_rows()
out["after_enable"] = search(a, mine[0], m16, 5, "auto")
print("RESULT " + json.dumps(out))
