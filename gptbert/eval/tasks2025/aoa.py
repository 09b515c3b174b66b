"""Age of acquisition of words (Chang & Bergen 2022, "Word Acquisition in Neural Language
Models"), BabyLM 2025 version: when does the model learn a word, compared with children?

Data: `cdi_childes.json` maps each of 504 CDI words to up to 20 C4 contexts
(the text before the word; 8,005 in all); `cdi_human.csv` gives, per word, the
share of children producing it at 16..30 months (Wordbank; Frank et al. 2017).

Official procedure (`AoA_word/run.py`, `AoA_word/evaluation_functions.py`,
`utils.AoAEvaluator.compute_curve_fitness`), which we follow:
  1. Surprisal (nats) of every word in every context at every milestone checkpoint
     (`chck_1M` .. `chck_100M` by words seen): the text is `context.strip() + " " + word`,
     and the tokens overlapping the word are scored (`common.split_at_chars`): causal,
     or masked one at a time and read one row earlier (mntp). Words of one character
     are skipped (`load_eval`); the current run.py keeps words with any number of
     contexts (--min_context 0), which gives the 8,005 records per checkpoint that
     collate_preds.py expects.
  2. Child AoA of a word: a sigmoid a / (1 + exp(-b (age - c))) + d fitted to its CDI
     proportions (start [1, 0.1, mean age, 0], bounds a in [0, 2], b in [0, 1],
     c in [first, last age], d in [-0.5, 0.5]); AoA = the age where it crosses 0.5,
     kept if inside the age range.
  3. Model AoA of a word: one sigmoid through *all* its (log10(words + 1), -surprisal)
     points, every context at every checkpoint (start [range, 1, mean, min]; unbounded);
     the threshold is halfway between "chance", log2(300,000), and the lowest
     surprisal seen (the official code mixes bits and nats here; we keep it, as it
     defines the score); AoA = log10 words where the curve crosses minus that threshold,
     kept if inside the checkpoints' range.
  4. Score ("curve fitness"): Pearson's r between model and child AoAs over the words that
     have both (0.0 when fewer than 3), reported as r (not x 100) like the official script.

The sigmoid fits use `stats.fit_sigmoid` (numpy); fit="scipy" uses scipy's `curve_fit`
exactly as the official code does (optional: `pip install 'gptbert[aoa-scipy]'`). The two
agree to ~1e-3 log10 words on the curves both fit; they can disagree on whether a nearly
flat (non-identifiable) curve fits at all. scipy's own answer there is not stable: with
scipy 1.17.1 a failed fit changes the next one (a tiny model's "spill" curve fails alone
but fits right after "bubbles" failed), so the official word set depends on call order.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...errors import GPTBertError, input_error
from ...pretrained import load
from ..forward import EvalModel
from ..scoring import SentenceScorer
from .common import TaskResult, default_data_dir, split_at_chars
from .stats import fit_sigmoid, pearson, sigmoid, sigmoid_crossing

CONTEXTS = "aoa/full_eval/aoa/cdi_childes.json"
HUMAN = "aoa/full_eval/aoa/cdi_human.csv"
AOA_SIZE = 8005  # records per checkpoint, as collate_preds.py checks
APPROX_VOCAB = 300_000  # the official "random chance" vocabulary


def load_cdi_contexts(path: str | Path, min_context: int = 0, limit: int | None = None) -> list[tuple[str, list[str]]]:
    """[(word, contexts)] for words longer than one character with at least `min_context` contexts
    (file order); limit keeps the first N words."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise input_error(path, f"cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise input_error(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise input_error(path, "expected a JSON object mapping words to lists of contexts")
    out = []
    for word, entries in data.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("context"), str)
                                                     for e in entries):
            raise input_error(path, f"word '{word}': expected a list of {{'context': ...}} objects")
        if len(word) > 1 and len(entries) >= min_context:
            out.append((word, [e["context"] for e in entries]))
    return out[:limit] if limit is not None else out


def load_cdi_human(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ages, {word: proportion per age}) from cdi_human.csv (age columns "16".."30"; NaN where empty)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
            fields = rows[0].keys() if rows else []
    except OSError as e:
        raise input_error(path, f"cannot be read ({e.strerror})") from None
    ages = [a for a in range(16, 31) if str(a) in fields]
    if "word" not in fields or not ages:
        raise input_error(path, "needs a 'word' column and age columns 16..30")
    human: dict[str, np.ndarray] = {}
    for lineno, r in enumerate(rows, start=2):
        try:
            props = np.array([float(r[str(a)]) if r[str(a)] not in ("", "NA") else np.nan for a in ages])
        except ValueError:
            raise GPTBertError(f"{path}:{lineno}: a proportion is not a number") from None
        human.setdefault(r["word"], props)  # the official lookup takes the first row of a word
    return np.array(ages, dtype=np.float64), human


def step_name(words_seen: int) -> str:
    """The official revision name of a milestone checkpoint: 1_000_000 -> "chck_1M"."""
    return f"chck_{words_seen // 10**6}M" if words_seen % 10**6 == 0 else str(words_seen)


def step_words(name: str) -> float | None:
    """Words seen from a revision name ("chck_10M" -> 1e7), as the official `extract_step_number` reads it."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMB]?)", str(name), re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}.get(m.group(2).upper(), 1.0)


def milestone_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(words seen, folder) of every `chck_{N}M` folder under `root`, by words seen: the milestone
    checkpoints the 2025 pipeline expects (as HF revisions) for AoA and the fast evaluations."""
    root = Path(root)
    if not root.is_dir():
        raise input_error(root, "no such folder of milestone checkpoints")
    found = [(int(m.group(1)) * 10**6, p) for p in root.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"chck_(\d+)M", p.name))]
    if not found:
        raise input_error(root, "no chck_{N}M checkpoint folders")
    return sorted(found)


# ---------------------------------------------------------------------------
# Surprisal at one checkpoint


def aoa_surprisal(scorer: SentenceScorer, words: Sequence[tuple[str, list[str]]], mode: str,
                  temperature: float = 1.0) -> np.ndarray:
    """(n_contexts,) surprisal in nats of each word in each of its contexts (flattened, word-major)."""
    texts, starts = [], []
    for word, contexts in words:
        for c in contexts:
            c = c.strip() + " "
            texts.append(c + word.strip())
            starts.append(len(c))
    pairs = split_at_chars(scorer.tokenizer, texts, starts)
    s = -scorer.score(pairs, mode, desc="aoa").column(temperature)
    s[np.array([not t for _, t in pairs], dtype=bool)] = np.nan  # an empty word has no surprisal
    return s


# ---------------------------------------------------------------------------
# Fits and the score


def _fit(kind: str) -> Callable:
    if kind == "numpy":
        return fit_sigmoid
    if kind != "scipy":
        raise GPTBertError(f"unknown sigmoid fit '{kind}' (numpy or scipy)")
    try:
        from scipy.optimize import curve_fit
    except ImportError:
        raise GPTBertError("fit='scipy' needs scipy (pip install 'gptbert[aoa-scipy]')") from None

    def fit(x, y, p0, bounds=None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kw = {} if bounds is None else {"bounds": bounds}
                return curve_fit(lambda x, a, b, c, d: sigmoid(x, a, b, c, d), x, y, p0=p0, maxfev=1000, **kw)[0]
        except (RuntimeError, ValueError, TypeError):
            return None
    return fit


def child_aoa(ages: np.ndarray, props: np.ndarray, fit: Callable = fit_sigmoid) -> float | None:
    """Age (months) where the children's fitted curve crosses 50%, or None (see the module docstring)."""
    ok = ~np.isnan(props)
    a, p = ages[ok], props[ok]
    if len(p) < 3:
        return None
    params = fit(a, p, [1.0, 0.1, float(np.mean(a)), 0.0], bounds=([0, 0, a[0], -0.5], [2.0, 1.0, a[-1], 0.5]))
    age = None if params is None else sigmoid_crossing(params, 0.5)
    return None if age is None or not a[0] <= age <= a[-1] else float(age)


def model_aoa(words_seen: Sequence[float], surprisals: Sequence[float], fit: Callable = fit_sigmoid,
              vocab: float = APPROX_VOCAB) -> float | None:
    """log10(words seen) where the model's fitted curve reaches its threshold, or None."""
    steps, s = np.asarray(words_seen, dtype=np.float64), np.asarray(surprisals, dtype=np.float64)
    if len(s) < 3:
        return None
    ok = ~np.isnan(s)
    steps, s = steps[ok], s[ok]
    if len(s) < 4:  # fewer points than parameters: curve_fit refuses
        return None
    chance = np.log2(vocab)
    threshold = chance - 0.5 * (chance - s.min())
    x, y = np.log10(steps + 1), -s
    params = fit(x, y, [y.max() - y.min(), 1.0, float(np.mean(x)), y.min()])
    log_aoa = None if params is None else sigmoid_crossing(params, -threshold)
    if log_aoa is None or not steps[0] <= 10**log_aoa - 1 <= steps[-1]:
        return None
    return float(log_aoa)


def curve_fitness(records: Sequence[dict], ages: np.ndarray, human: dict[str, np.ndarray],
                  fit: str = "numpy") -> dict:
    """Pearson's r of model vs child AoA over the words that have both, from official-format records."""
    f = _fit(fit)
    by_word: dict[str, tuple[list, list]] = {}
    for r in records:
        w = step_words(r["step"])
        if w is None:
            continue
        steps, surps = by_word.setdefault(r["target_word"], ([], []))
        steps.append(w)
        surps.append(float(r["surprisal"]))
    words, model, child = [], [], []
    for word, (steps, surps) in by_word.items():
        if word not in human:
            continue
        c = child_aoa(ages, human[word], f)
        if c is None:
            continue
        m = model_aoa(steps, surps, f)
        if m is None:
            continue
        words.append(word)
        model.append(m)
        child.append(c)
    r = pearson(model, child) if len(words) >= 3 else 0.0
    return {"curve_fitness": float(r), "n_words": len(words), "n_words_scored": len(by_word), "words": words,
            "model_aoa_log10_words": model, "child_aoa_months": child}


def _load_checkpoint(path, device):
    pre = load(path, device=device)
    return pre.model, pre.tokenizer


def evaluate_aoa(checkpoints: Sequence[tuple[int, object]], tokenizer=None, mode: str = "causal", *,
                 data_dir: str | Path | None = None, contexts_path: str | Path | None = None,
                 human_path: str | Path | None = None, precision: str = "fp32", device: str = "cpu",
                 max_tokens: int = 4096, temperature: float = 1.0, min_context: int = 0, limit: int | None = None,
                 fit: str = "numpy", progress: bool = False, model_name: str = "gptbert",
                 log: Callable[[str], None] = lambda s: None) -> TaskResult:
    """Surprisal learning curves over milestone checkpoints, and their fit to the children's AoA.

    checkpoints: (words seen, model) pairs, where a model is a GPTBERT (then pass `tokenizer`)
    or a checkpoint folder (loaded with its own tokenizer); scored in order of words seen.
    The official output (`surprisal.json`, in AoA_word/) lists every record.
    """
    if not checkpoints:
        raise GPTBertError("AoA needs at least one checkpoint (ideally all milestone checkpoints chck_1M..)")
    _fit(fit)  # fail early on a missing scipy
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    words = load_cdi_contexts(Path(contexts_path) if contexts_path else root / CONTEXTS, min_context, limit)
    ages, human = load_cdi_human(Path(human_path) if human_path else root / HUMAN)
    records: list[dict] = []
    for n_words, model in sorted(checkpoints, key=lambda c: c[0]):
        tok = tokenizer
        if isinstance(model, (str, Path)):
            model, tok = _load_checkpoint(model, device)
        if tok is None:
            raise GPTBertError("evaluate_aoa: pass the tokenizer of in-memory models")
        scorer = SentenceScorer(EvalModel(model, precision), tok, temperatures=(temperature,), max_tokens=max_tokens,
                                progress=progress)
        s = aoa_surprisal(scorer, words, mode, temperature)
        name, k = step_name(n_words), 0
        for word, contexts in words:
            for i, c in enumerate(contexts):
                records.append({"step": name, "word_count": n_words, "target_word": word, "context_id": i,
                                "context": c, "surprisal": float(s[k])})
                k += 1
        log(f"aoa: {name} scored ({k} contexts, mean surprisal {np.nanmean(s):.3f})")
    fitness = curve_fitness(records, ages, human, fit)
    n_ctx = sum(len(c) for _, c in words)
    summary = {"task": "aoa", "mode": mode, "metric": "Pearson r of model vs child AoA (curve fitness)",
               "temperature": temperature, "score": fitness["curve_fitness"], "fit": fit,
               "checkpoints": [step_name(n) for n, _ in sorted(checkpoints, key=lambda c: c[0])],
               "n_contexts": n_ctx, "limit": limit, "complete": limit is None and n_ctx == AOA_SIZE,
               **{k: v for k, v in fitness.items() if k != "curve_fitness"}}
    official = {"metadata": {"model_name": model_name, "use_bos_only": False, "total_steps": len(checkpoints),
                             "completed_steps": len({r["step"] for r in records})},
                "results": records}
    return TaskResult("aoa", mode, summary, official, official_dir="AoA_word", official_file="surprisal.json",
                      report=f"AoA curve fitness (Pearson r): {fitness['curve_fitness']:.4f} "
                             f"over {fitness['n_words']} words\n", report_file="report.txt")
