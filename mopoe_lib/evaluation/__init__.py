"""Evaluation: modality classifiers, coherence, latent probes and importance-sampled likelihoods."""

from .classifiers import ModalityClassifiers, accuracy, load_classifiers, predict, train_classifiers
from .coherence import coherence_by_num_inputs, conditional_coherence, random_coherence
from .latent import latent_probe, subset_means
from .likelihood import conditional_log_likelihood, log_likelihood

__all__ = [
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
    "train_classifiers",
]
