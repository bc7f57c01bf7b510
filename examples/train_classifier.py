"""Train a scikit-learn classifier on an audioprep store; report accuracy on the test split.

Each clip becomes one fixed-length vector: the mean and the standard deviation over time
of every bin of ``log_mel`` and ``mfcc`` (whichever of them the store holds). A
standardising logistic regression is fitted on the train split (augmented copies
included) and scored on the test split, whose speakers (groups) never occur in train.

Features and normalisation have to fit together. The clip vectors are pooled over time,
so they are computed from the stored (raw) values, ``open_dataset(..., normalize=False)``,
whatever ``features.normalization`` the store records: per-example normalisation makes
every band of every clip mean 0 and std 1 over time, so its pooled mean and std are the
same for every clip and the classifier is left at chance. The corpus-wide scaling is done
by ``StandardScaler``, fitted on the train split only (what ``global`` normalisation
would do, without its statistics including the test split).

    python examples/train_classifier.py data/demo.zarr

See docs/training.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from pipeline.store.reader import AudioDataset, open_dataset, warn_if_pooling_normalized

PREFERRED = ("log_mel", "mfcc")


def clip_statistics(ds: AudioDataset, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip mean and std over valid frames of every feature of ``ds``.

    Returns
    -------
    X : np.ndarray [shape=(n_clips, 2 * total_bins), dtype=float32]
    y : np.ndarray [shape=(n_clips,), dtype=int64]
        Index into ``ds.labels``.
    """
    warn_if_pooling_normalized(ds, stacklevel=3)
    xs, ys = [], []
    # iter_batches reads whole chunks of the store at a time and zero-pads each batch to its
    # longest clip; ``lengths`` says how many frames of each row are real.
    for batch in ds.iter_batches(batch_size, shuffle=False):
        lengths = batch["lengths"].astype(np.float32)
        parts = []
        for name in ds.feature_names:
            x = batch["features"][name]
            x = x.reshape(x.shape[0], x.shape[1], -1)  # (batch, frames, bins)
            valid = (np.arange(x.shape[1])[None, :] < batch["lengths"][:, None])[..., None]
            n = np.maximum(lengths, 1.0)[:, None]
            mean = (x * valid).sum(axis=1) / n
            var = (((x - mean[:, None, :]) * valid) ** 2).sum(axis=1) / n
            parts += [mean, np.sqrt(var)]
        xs.append(np.concatenate(parts, axis=1))
        ys.append(batch["label_index"])
    if not xs:
        raise ValueError("the split is empty")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def features_to_use(ds: AudioDataset) -> list[str]:
    """``log_mel`` and ``mfcc`` when the store has them, else every feature it has."""
    return [f for f in PREFERRED if f in ds.feature_names] or list(ds.feature_names)


def main(store: str, *, train_split: str = "train", test_split: str = "test", verbose: bool = True) -> float:
    """Fit on ``train_split``, return the accuracy on ``test_split``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, classification_report
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = open_dataset(store)
    features = features_to_use(probe)
    # raw values: pooled over time, per-example-normalised features are 0 and 1 in every clip
    train = open_dataset(store, train_split, features=features, normalize=False)
    test = open_dataset(store, test_split, features=features, include_copies=False, normalize=False)
    x_train, y_train = clip_statistics(train)
    x_test, y_test = clip_statistics(test)

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    accuracy = float(accuracy_score(y_test, predicted))
    if verbose:
        labels: Sequence[str] = train.labels
        print(f"features: {', '.join(features)} -> {x_train.shape[1]} values per clip (mean and std over time)")
        print(f"normalization: stored values pooled per clip, then StandardScaler on train (the store records {probe.normalization!r})")
        print(f"train: {len(train)} clips ({int((train.table['copy'] > 0).sum())} augmented copies); test: {len(test)} clips")
        present = sorted(set(y_test.tolist()) | set(predicted.tolist()))
        print(classification_report(y_test, predicted, labels=present, target_names=[labels[i] for i in present], zero_division=0))
        print(f"test accuracy: {accuracy:.3f} (chance: {1 / max(len(labels), 1):.3f})")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="path or URL of a store written by `audioprep run`")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    args = parser.parse_args()
    main(args.store, train_split=args.train_split, test_split=args.test_split)
