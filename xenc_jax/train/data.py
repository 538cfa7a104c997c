"""Training data: readers (pairs / triplets / candidate lists from TSV, CSV, JSON Lines), and a
deterministic, resumable, host-sharded stream of fixed-shape, length-grouped batches.

The unit of training data is a *group* of G text pairs that one loss term sees together:
G = 1 for pointwise losses (BCE, CE, MSE), G = 1 + negatives for MarginMSE / cross-encoder
MNRL (positive first), G = list size for listwise losses. A batch holds Q groups, i.e. Q * G
rows of [rows, L] token ids; missing slots (short lists, the last partial batch) are rows with
`valid = False`, which every loss masks out.

Order: each epoch draws a permutation of the groups from (seed, epoch), cuts it into "mega
batches" of `group_factor` batches, sorts each mega batch by token length, cuts it into
batches and shuffles the batch order (HF's group_by_length idea): batches hold examples of
similar length, so padding to the few bucket lengths wastes little, and the order is random.
Everything follows from (seed, epoch), so a position (epoch, batch index) fully identifies
where training stopped and `BatchStream.start_at` resumes there.

Multi-host: each process parses only its shard of the rows (row i goes to process
i % process_count) and builds its local part of every batch; the bucket length of each step is
agreed on once per epoch (max over processes, one small allgather) so every process runs the
same shapes. numpy only, apart from that allgather.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..batching import Batch, TokenTable, fill_rows, tokenize_pairs, tokenize_texts
from .rows import FORMATS, DataError, iter_rows, parse_row  # noqa: F401  (DataError: the public name)

log = logging.getLogger(__name__)

KINDS = ("pairs", "triplets", "lists")
LABEL_FREE_LOSSES = ("mnrl", "mnrl_symmetric", "matryoshka_mnrl")  # step.py: losses that never read labels


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where one split lives and how to read it.

    columns: the text columns; for files without a header (tsv/csv) 0-based indices, otherwise
      names (jsonl keys, csv header names). pairs: (text1, text2); triplets: (query, positive,
      negative, [negative, ...]); lists: (query, documents) where documents is a JSON list.
    label_column: index or name of the label (pairs: a number or a class name; lists: a JSON
      list of relevance grades, one per document). None: no labels.
    label_scale: labels are multiplied by it (STS-B 0..5 -> 0..1 with 0.2).
    label_map: class name -> class id (SNLI: {"contradiction": 0, ...}).
    skip_labels: rows with one of these raw labels are dropped (SNLI's "-").
    rows: (start, stop) slice of the data rows (after header/blank lines), e.g. to split a file.
    on_bad_row: "error" (default) or "skip" (with a warning giving the count and first line).
    extra_columns: tsv/csv: "error" (default): a row with more columns than the ones read (no
      header) or than the header is an error naming file:line, since a tab inside a text would
      otherwise cut it silently; "ignore": such columns are dropped (STS-B: some rows carry 2).
    add_swapped: pairs only: also train on (text2, text1) with the same label, for a symmetric
      task such as STS (the recipe of sentence-transformers' STS-B cross-encoder example).
    name, split: format "hf" (or a path "hf://ID"): load_dataset(path, name, split=split).
    streaming: training data read a window at a time instead of all at once, memory bounded by
      `window` rows whatever the data's size (train/streaming.py; the order differs from the
      in-memory one but is as deterministic and resumable).
    window: rows per shuffle window when streaming; the memory a window takes is about window x
      texts per row x ~1 KB (tokenized, ~100 tokens each) plus the rows as read.
    """
    path: str = ""
    kind: str = "pairs"
    format: str = "auto"
    columns: tuple = (0, 1)
    label_column: Any = 2
    label_scale: float = 1.0
    label_map: dict | None = None
    skip_labels: tuple = ()
    header: bool = False
    rows: tuple | None = None
    on_bad_row: str = "error"
    add_swapped: bool = False
    extra_columns: str = "error"
    name: str | None = None
    split: str = "train"
    streaming: bool = False
    window: int = 16384

    def resolved_format(self) -> str:
        from .sources import HUB_PREFIX
        if self.path.startswith(HUB_PREFIX):
            return "hf"
        if self.format != "auto":
            if self.format not in FORMATS:
                raise DataError(f"data format must be one of {FORMATS} or auto, got {self.format!r}")
            _check_suffix(self)
            return self.format
        from .sources import table_format
        suffix = Path(self.path).suffix.lower()
        return table_format(Path(self.path)) or {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix, "tsv")


def _check_suffix(src: DataSource) -> None:
    """A .jsonl / .parquet file under a preset's format="tsv" (`xenc mine`'s output given as
    `--set train.path=mined.jsonl`) was read as TSV: "missing column 1 (0-based): the row has only 1
    column(s)". Only these suffixes are checked: a .csv read as tsv is normal (STS-B's files)."""
    suffix = Path(src.path).suffix.lower()
    implied = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(suffix)
    if implied is None or implied == src.format or not Path(src.path).is_file():
        return
    keys = ""
    if implied == "jsonl":
        try:
            with open(src.path, encoding="utf-8") as f:
                first = json.loads(f.readline() or "{}")
            keys = f"; its first row's keys are {list(first)[:8]}" if isinstance(first, dict) else ""
        except (OSError, ValueError):
            pass
    raise DataError(f"{src.path} is a {suffix} file, but the data format is {src.format!r} (the preset's?): "
                    f"set format={implied!r} (or 'auto'), and columns / label_column to its column names{keys}")


@dataclasses.dataclass
class Examples:
    """Parsed rows: texts[i] is a tuple of strings (lists: (query, [docs])), labels[i] a float,
    an int or a list of floats, or None."""
    kind: str
    texts: list
    labels: list | None
    source: str

    def __len__(self):
        return len(self.texts)


def read_examples(src: DataSource, *, process_index: int = 0, process_count: int = 1) -> Examples:
    """Parse the rows of this process's shard (row i -> process i % process_count), all of them.
    Streamed data is read by train/streaming.read_examples (the training loop's reader), which
    hands data that is not streamed back here; here it is an error (e.g. eval data, read whole)."""
    if src.streaming:
        raise DataError(f"{src.path}: this data is read whole (eval and test data are), but it says "
                        "streaming; set streaming false for it")
    return _read_all(src, process_index, process_count)


def label_names(src: DataSource, num_labels: int) -> dict[str, str] | None:
    """{"0": name, ...} when label_map names each class id 0..num_labels-1 once (SNLI's), for the
    exported config.json's id2label; else None (the export keeps LABEL_i)."""
    by_id: dict[int, list] = {}
    try:
        for name, i in (src.label_map or {}).items():
            by_id.setdefault(int(i), []).append(str(name))
    except (TypeError, ValueError):
        return None
    if num_labels < 2 or sorted(by_id) != list(range(num_labels)) or any(len(v) != 1 for v in by_id.values()):
        return None
    return {str(i): by_id[i][0] for i in range(num_labels)}


def check_source(src: DataSource) -> None:
    if src.kind not in KINDS:
        raise DataError(f"data kind must be one of {KINDS}, got {src.kind!r}")
    if src.on_bad_row not in ("error", "skip"):
        raise DataError(f"on_bad_row must be 'error' or 'skip', got {src.on_bad_row!r}")
    need = {"pairs": 2, "triplets": 3, "lists": 2}[src.kind]
    if len(src.columns) < need or (src.kind != "triplets" and len(src.columns) != need):
        raise DataError(f"{src.kind} data needs {need}{'+' if src.kind == 'triplets' else ''} text "
                        f"columns, got columns={src.columns!r}")
    if src.add_swapped and src.kind != "pairs":
        raise DataError(f"add_swapped applies to pairs data, not {src.kind!r}")
    # `--set train.label_column=5` once the score column sat in columns too: the score trained as
    # a text (and as its own label) without a word; and `--set train.rows=16` (one number) failed
    # with "not enough values to unpack".
    if src.label_column is not None and src.label_column in tuple(src.columns):
        raise DataError(f"{src.path}: column {src.label_column!r} is both a text column (columns="
                        f"{tuple(src.columns)!r}) and the label_column; the label would be read as a text too. "
                        "Set columns to the text columns only")
    if src.rows is not None and not (
            isinstance(src.rows, (tuple, list)) and len(src.rows) == 2 and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
                                       for v in src.rows)):
        raise DataError(f"{src.path}: rows must be (start, stop), 0-based data rows, stop excluded or None "
                        f"for the end, e.g. rows=(0,1000) for the first 1000; got rows={src.rows!r}")


def parse_rows(src: DataSource, rows, *, process_index: int = 0, process_count: int = 1,
               start: int = 0, stop: int | None = None) -> tuple:
    """(texts, labels, bad row messages, skipped, seen) of the rows (n, row) of this process's
    share (the i-th row goes to process i % process_count), add_swapped applied."""
    texts, labels, bad, skipped, seen = [], [], [], 0, 0
    for i, (n, row) in enumerate(rows):
        if i < start or (stop is not None and i >= stop):
            continue
        if (i - start) % process_count != process_index:
            continue
        seen += 1
        where = f"{src.path}:{n}"
        try:
            t, y, skip = parse_row(row, src, where)
        except DataError as e:
            if src.on_bad_row == "error":
                raise DataError(f"{e} (set on_bad_row='skip' to drop bad rows)") from None
            bad.append(str(e))
            continue
        if skip:
            skipped += 1
            continue
        texts.append(t)
        labels.append(y)
    if src.add_swapped:
        # Each swapped copy right after its original: per-process shards stay balanced.
        texts = [t for a, b in texts for t in ((a, b), (b, a))]
        labels = [y for y in labels for _ in range(2)]
    return texts, labels, bad, skipped, seen


def _read_all(src: DataSource, process_index: int, process_count: int) -> Examples:
    check_source(src)
    fmt = src.resolved_format()
    start, stop = src.rows if src.rows else (0, None)
    texts, labels, bad, skipped, seen = parse_rows(src, iter_rows(src, fmt), process_index=process_index,
                                                   process_count=process_count, start=start, stop=stop)
    if bad:
        log.warning("%s: skipped %d bad row(s); first: %s", src.path, len(bad), bad[0])
    if not texts:
        what = "no rows at all" if not seen else f"{seen} row(s), none usable"
        raise DataError(f"{src.path}: no examples ({what}{'; check rows=' + str(src.rows) if src.rows else ''})")
    if skipped:
        log.info("%s: dropped %d row(s) with a label in skip_labels", src.path, skipped)
    return Examples(src.kind, texts, None if src.label_column is None else labels, src.path)


def check_labels(ex: Examples, loss: str, num_labels: int) -> None:
    """Labels that the loss cannot use are an error here, before any compute (streaming: in
    the first window now, in each later window when it is read)."""
    if hasattr(ex, "check_labels"):
        return ex.check_labels(loss, num_labels)
    if ex.labels is None:
        if loss in ("bce", "ce", "mse", "listnet", "listmle", "lambda", "ranknet", "cosent"):
            raise DataError(f"{ex.source}: loss {loss!r} needs labels, but no label_column is set")
        return
    if loss in LABEL_FREE_LOSSES:
        # STS-B pairs with their scores under MNRL trained every pair as a positive, silently
        log.warning("%s: loss %r does not read labels: the label column is ignored and every row trains "
                    "as (anchor, positive, negatives...); set label_column=None, or choose a loss that reads "
                    "them (cosent for scored pairs)", ex.source, loss)
        return
    flat = np.asarray([v for y in ex.labels for v in (y if isinstance(y, list) else [y])], np.float64)
    if loss == "ce":
        bad = np.flatnonzero((flat != np.round(flat)) | (flat < 0) | (flat >= num_labels))
        if bad.size:
            raise DataError(f"{ex.source}: label {flat[bad[0]]:g} out of range for {num_labels} classes "
                            f"(need integers 0..{num_labels - 1}); {bad.size} such label(s)")
    elif loss == "bce":
        bad = np.flatnonzero((flat < 0) | (flat > 1))
        if bad.size:
            raise DataError(f"{ex.source}: label {flat[bad[0]]:g} out of range for binary cross-entropy "
                            "(need 0..1; scale them with label_scale)")
    elif loss in ("listmle", "lambda", "ranknet") and (flat < 0).any():
        # listnet is not here: ST's ListNetLoss softmaxes its labels as they are, so a teacher's
        # raw (negative) logits are a valid target, as there (tests/test_losses.py)
        raise DataError(f"{ex.source}: negative relevance label {flat[flat < 0][0]:g} (loss {loss!r} reads "
                        "graded relevance >= 0; for a teacher's raw scores use loss 'listnet' or 'margin_mse')")


# ----------------------------------------------------------------------------- tokenized groups

@dataclasses.dataclass
class Groups:
    """Tokenized groups: slot s of group g is encodings[g * G + s] (None = empty slot)."""
    encodings: list
    labels: np.ndarray        # float32 [N, G] (pointwise: column 0); zeros when unlabelled
    group_size: int
    lengths: np.ndarray       # int64 [N]: longest pair of each group

    def __len__(self):
        return len(self.lengths)


def make_groups(ex: Examples, tokenizer, max_length: int, *, task: str = "cross_encoder",
                group_size: int | None = None, do_lower_case: bool = False, encode_pairs=None,
                encode_texts=None) -> Groups:
    """Tokenize as ST does. cross_encoder: pairs -> G=1; triplets -> (q, pos), (q, neg)...;
    lists -> (q, doc) per candidate (encode_pairs(pairs): the model's pair tokenization,
    chat_format.pair_encoder; default a plain text pair). bi_encoder: every text column separately, G = columns
    (lowercased first when the model's sentence_bert_config says do_lower_case, as ST;
    encode_texts(texts): the model's text tokenization, bi_head.BiHead.text_encoder, e.g. through
    its chat template). Streamed examples: a StreamedGroups that tokenizes each window when it is read."""
    if hasattr(ex, "groups_of"):
        return ex.groups_of(tokenizer, max_length, task=task, group_size=group_size,
                            do_lower_case=do_lower_case, encode_pairs=encode_pairs, encode_texts=encode_texts)
    if task == "bi_encoder":
        cols = len(ex.texts[0])
        if any(len(t) != cols for t in ex.texts):
            raise DataError(f"{ex.source}: rows have different numbers of texts")
        flat = [t for row in ex.texts for t in row]
        encs = (tokenize_texts(tokenizer, flat, max_length, do_lower_case) if encode_texts is None
                else encode_texts(flat))
        G = cols
    else:
        if ex.kind == "pairs":
            pairs, G = [t for t in ex.texts], 1
        elif ex.kind == "triplets":
            G = len(ex.texts[0])
            pairs = [(row[0], d) for row in ex.texts for d in row[1:]]
            G -= 1
        else:
            G = group_size or max(len(t[1]) for t in ex.texts)
            _warn_list_size(ex, G)
            pairs, slots = [], []
            for q, docs in ex.texts:
                docs = docs[:G]
                pairs.extend((q, d) for d in docs)
                slots.append(len(docs))
        encs_flat = (tokenize_pairs(tokenizer, pairs, max_length) if encode_pairs is None
                     else encode_pairs(pairs))
        if ex.kind == "lists":
            encs, k = [], 0
            for n in slots:
                encs.extend(encs_flat[k:k + n] + [None] * (G - n))
                k += n
        else:
            encs = encs_flat
    n = len(ex.texts)
    labels = np.zeros((n, G), np.float32)
    if ex.labels is not None:
        for i, y in enumerate(ex.labels):
            if isinstance(y, list):
                y = y[:G]
                labels[i, :len(y)] = y
            else:
                labels[i, 0] = y
    lens = np.asarray([max(len(e) for e in encs[i * G:(i + 1) * G] if e is not None) for i in range(n)],
                      np.int64)
    return Groups(encs, labels, G, lens)


def _warn_list_size(ex: Examples, G: int) -> None:
    """list_size against the lists read. Longer lists are cut to their first list_size documents
    and every step computes list_size slots per query: a distillation preset (list_size=8) fed a
    file mined with 3 negatives computed twice the pairs it trained on, and one mined with 15
    trained on half its negatives, without a word."""
    sizes = np.asarray([len(t[1]) for t in ex.texts])
    if (cut := int((sizes > G).sum())):
        log.warning("%s: %d of %d lists have more than list_size=%d documents (up to %d): only the first "
                    "%d of each are trained on; set list_size=%d (or 0: the longest list) to train on all",
                    ex.source, cut, len(sizes), G, sizes.max(), G, sizes.max())
    elif sizes.max() < G:
        log.warning("%s: every list has at most %d documents, but list_size=%d: %.0f%% of each step's pairs "
                    "are padding; set list_size=%d (or 0: the longest list)", ex.source, sizes.max(), G,
                    100 * (1 - sizes.mean() / G), sizes.max())


# ----------------------------------------------------------------------------- batch stream

@dataclasses.dataclass(frozen=True, eq=False)
class TrainBatch(Batch):
    """A batching.Batch (the one batch contract of model_fns.py: 0-based positions, here one
    segment per row, read at token 0; example_ids [R, 1]: the row's index into
    Groups.encodings, -1 for an empty slot) plus the labels of its groups."""
    labels: np.ndarray  # float32 [Q, G]

    @property
    def valid(self) -> np.ndarray:
        """bool [R]: the rows that hold a pair; every loss masks the others out."""
        return self.example_ids[:, 0] >= 0

    def arrays(self) -> dict[str, np.ndarray]:
        """What the jitted train step takes: the model inputs, labels and valid."""
        return {**super().arrays(), "labels": self.labels, "valid": self.valid}


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    batch_size: int                  # groups per step, global (all processes together)
    bucket_lengths: tuple = (32, 64, 128, 256)
    max_length: int = 256
    pad_token_id: int = 0
    seed: int = 0
    group_factor: int = 50           # batches per length-sorted mega batch
    shuffle: bool = True
    drop_last: bool = False


def bucket_of(length: int, buckets: Sequence[int], max_length: int) -> int:
    full = [b for b in sorted(buckets) if b < max_length] + [max_length]
    for b in full:
        if length <= b:
            return b
    raise DataError(f"example of {length} tokens exceeds max_length={max_length}")


class BatchStream:
    """Deterministic epochs of fixed-shape numpy batches; `position` = (epoch, index) of the next
    batch. Shapes: rows = local groups per step * G, length = one of the bucket lengths."""

    def __init__(self, groups: Groups, cfg: StreamConfig, *, process_index: int = 0,
                 process_count: int = 1, allgather=None):
        if cfg.batch_size % process_count:
            raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the process count {process_count}")
        self.groups, self.cfg = groups, cfg
        self.local_batch = cfg.batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        self._allgather = allgather
        self._plan_cache: dict[int, tuple[list, list]] = {}
        self.epoch, self.index = 0, 0

    # ---- planning
    def _local_plan(self, epoch: int) -> list[np.ndarray]:
        n, b = len(self.groups), self.local_batch
        rng = np.random.default_rng([self.cfg.seed, epoch, self.process_index])
        order = rng.permutation(n) if self.cfg.shuffle else np.arange(n)
        mega = b * max(1, self.cfg.group_factor)
        batches = []
        for s in range(0, n, mega):
            chunk = order[s:s + mega]
            chunk = chunk[np.argsort(-self.groups.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + b] for i in range(0, len(chunk), b)]
        if self.cfg.drop_last and batches and len(batches[-1]) < b:
            batches.pop()
        if self.cfg.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def plan(self, epoch: int) -> tuple[list[np.ndarray], list[int]]:
        """(local group indices per step, bucket length per step) of an epoch; the same number
        of steps and the same lengths on every process."""
        if epoch not in self._plan_cache:
            batches = self._local_plan(epoch)
            lens = [bucket_of(int(self.groups.lengths[ix].max()) if len(ix) else 1, self.cfg.bucket_lengths, self.cfg.max_length)
                    for ix in batches]
            if self.process_count > 1:
                steps = int(np.max(self._allgather(np.asarray([len(batches)]))))
                lens = lens + [0] * (steps - len(lens))
                batches = batches + [np.zeros((0,), np.int64)] * (steps - len(batches))
                lens = [int(x) for x in np.max(self._allgather(np.asarray(lens)), axis=0)]
                lens = [x if x else min(self.cfg.bucket_lengths) for x in lens]
            self._plan_cache = {epoch: (batches, lens)}
        return self._plan_cache[epoch]

    def steps_per_epoch(self) -> int:
        return len(self.plan(0)[0])

    # ---- position
    @property
    def position(self) -> dict:
        return {"epoch": int(self.epoch), "index": int(self.index)}

    def start_at(self, position: dict) -> None:
        self.epoch, self.index = int(position["epoch"]), int(position["index"])

    # ---- batches
    def build(self, group_ix: np.ndarray, length: int) -> TrainBatch:
        """One training batch of [local groups * G, length] rows: row q * G + s is slot s of
        group group_ix[q], laid out by batching.fill_rows (the function inference batches with)."""
        G, group_ix = self.groups.group_size, np.asarray(group_ix, np.int64)
        slots = (group_ix[:, None] * G + np.arange(G)).reshape(-1)
        encs = [self.groups.encodings[e] for e in slots]
        present = np.flatnonzero(np.fromiter((e is not None for e in encs), bool, len(encs)))
        table = TokenTable.of(encs)
        if table.lens.size and table.lens.max() > length:
            raise ValueError(f"an example of {table.lens.max()} tokens does not fit the step's length {length}")
        rows = self.local_batch * G
        counts = np.zeros(rows, np.int64)
        counts[present] = 1
        b = fill_rows(table, present, counts, (rows, length), 1, int(self.cfg.pad_token_id))[0]
        example_ids = np.full((rows, 1), -1, np.int64)
        example_ids[present, 0] = slots[present]
        labels = np.zeros((self.local_batch, G), np.float32)
        labels[:len(group_ix)] = self.groups.labels[group_ix]
        return TrainBatch(b.input_ids, b.attention_mask, b.token_type_ids, b.position_ids, b.cls_positions,
                          example_ids, labels)

    def __iter__(self):
        return self

    def __next__(self) -> TrainBatch:
        batches, lens = self.plan(self.epoch)
        if self.index >= len(batches):
            self.epoch, self.index = self.epoch + 1, 0
            batches, lens = self.plan(self.epoch)
        out = self.build(batches[self.index], lens[self.index])
        self.index += 1
        return out


def process_allgather(x: np.ndarray) -> np.ndarray:
    """[process_count, ...] gathered from every process (multi-host JAX)."""
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x))
