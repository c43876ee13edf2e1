"""Evaluation: modality classifiers, coherence, latent probes, Frechet distances and importance-sampled
likelihoods, and the suite that writes them all as tidy tables."""

from .bound import evaluate_bound
from .classifiers import ModalityClassifiers, accuracy, load_classifiers, predict, train_classifiers
from .coherence import (
    coherence_by_num_inputs,
    conditional_coherence,
    conditional_coherence_by_judge,
    random_coherence,
)
from .frechet import frechet_classifier_distance, frechet_distance, inception_frechet_distance
from .latent import latent_probe, subset_means, subset_posteriors
from .likelihood import (
    conditional_by_num_inputs,
    conditional_log_likelihood,
    log_likelihood,
    marginal_log_likelihood,
)
from .published import published_rows
from .results import collect_results, evaluate_run, evaluated, judges_for, provenance, result_folders, seed_summary
from .suite import SuiteOptions, evaluate_model, read_tables, write_tables

__all__ = [
    "conditional_coherence_by_judge",
    "evaluate_bound",
    "judges_for",
    "conditional_by_num_inputs",
    "marginal_log_likelihood",
    "collect_results",
    "evaluate_run",
    "evaluated",
    "provenance",
    "result_folders",
    "seed_summary",
    "SuiteOptions",
    "evaluate_model",
    "frechet_classifier_distance",
    "frechet_distance",
    "inception_frechet_distance",
    "published_rows",
    "read_tables",
    "write_tables",
    "ModalityClassifiers",
    "accuracy",
    "coherence_by_num_inputs",
    "conditional_coherence",
    "conditional_log_likelihood",
    "latent_probe",
    "load_classifiers",
    "log_likelihood",
    "predict",
    "random_coherence",
    "subset_means",
    "subset_posteriors",
    "train_classifiers",
]
