"""Published PolyMNIST numbers to compare with, each with its source (full references in the README).

Values are fractions. ``coherence`` is conditional coherence by number of input modalities (1..4);
``latent_probe`` is latent linear-classification accuracy by number of input modalities (1..5). The paper's
own models use the paper's networks (latent 512); the book's shipped models are compact (latent 64), so a
comparison is of trends and rough levels, not of digits.
"""

from __future__ import annotations

#: One row per (source, model, metric): ``values`` indexed by number of inputs starting at 1.
PUBLISHED: list[dict] = [
    {"model": "mopoe", "metric": "coherence", "values": [0.66, 0.77, 0.81, 0.83],
     "source": "paper (Sutter et al. 2021), as reprinted in MultiVae's README reproducibility table"},
    {"model": "mopoe", "metric": "coherence", "values": [0.67, 0.79, 0.84, 0.85],
     "source": "MultiVae re-implementation (README)"},
    {"model": "mopoe", "metric": "coherence", "values": [0.68, 0.79, 0.83, 0.84],
     "source": "multi-view-AE re-implementation"},
    {"model": "mopoe", "metric": "coherence", "values": [0.63, 0.75, 0.79, 0.81],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mvae", "metric": "coherence", "values": [0.29, 0.42, 0.48, 0.52],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mmvae", "metric": "coherence", "values": [0.71, 0.71, 0.71, 0.71],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mmjsd", "metric": "coherence", "values": [0.69, 0.57, 0.64, 0.67],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mvtcae", "metric": "coherence", "values": [0.69, 0.77, 0.83, 0.86],
     "source": "MVTCAE paper (Hwang et al. 2021), as reprinted in MultiVae's README reproducibility table"},
    {"model": "mvtcae", "metric": "coherence", "values": [0.64, 0.82, 0.88, 0.91],
     "source": "MultiVae re-implementation (README)"},
    # one number: the mean over ordered pairs of modalities of the coherence of x_n generated from x_m alone (how the
    # authors' code computes it), so it sits at one input
    {"model": "mmvae_plus", "metric": "coherence", "values": [0.869],
     "source": "MMVAE+ paper (Palumbo et al. 2023), as reprinted in MultiVae's README reproducibility table"},
    {"model": "mmvae_plus", "metric": "coherence", "values": [0.886],
     "source": "MultiVae re-implementation (README)"},
    {"model": "mopoe", "metric": "latent_probe", "values": [0.82, 0.90, 0.93, 0.94, 0.95],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mvae", "metric": "latent_probe", "values": [0.70, 0.84, 0.91, 0.93, 0.95],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code"},
    {"model": "mmvae", "metric": "latent_probe", "values": [0.82, 0.82, 0.82, 0.82, 0.82],
     "source": "MVTCAE paper (Hwang et al. 2021), appendix, 5 re-runs of the MoPoE code (reported flat)"},
]


def published_rows() -> list[dict]:
    """The published numbers as tidy rows: ``model``, ``metric``, ``num_inputs``, ``value``, ``source``."""
    return [{"model": row["model"], "metric": row["metric"], "num_inputs": k + 1, "value": value,
             "source": row["source"]}
            for row in PUBLISHED for k, value in enumerate(row["values"])]
