"""What the papers themselves report, typed in with where each number or statement comes from.

    >>> from moelab.papers import MIXTRAL, mixtral_table5
    >>> MIXTRAL["table5"].source
    'Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1), §5, Table 5'
    >>> float(mixtral_table5().loc["ArXiv", ("first", 15)])      # % of consecutive pairs, layer 15
    27.9

Each `PaperEntry` holds a value (a number, a table, or a paraphrased statement), its source
(paper, section, table or figure) and a note on how to read it. A plot of the tiny model puts
these beside its own numbers so a learner always sees what real Mixtral / OLMoE showed.
Rules kept here: nothing the paper does not say is attributed to it (paraphrases say so);
a number that could not be checked against the paper is left out rather than guessed.

Mixtral: Jiang et al. 2024, "Mixtral of Experts", arXiv:2401.04088.
OLMoE:   Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models", arXiv:2409.02060.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["PaperEntry", "MIXTRAL", "OLMOE", "mixtral_table5", "cite"]

_MX = "Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1)"
_OL = "OLMoE paper (Muennighoff et al. 2024, arXiv:2409.02060)"


@dataclass(frozen=True)
class PaperEntry:
    value: Any                 # a number, a dict/table, or a statement (str)
    source: str                # paper, section, table or figure
    note: str = ""             # how to read it; "paraphrase" when the words are ours


def _table5() -> dict:
    # One transcription for the whole library: moelab.serving.synthetic calibrates its Mixtral-like
    # router to the same table. domain -> (first @ 0, 15, 31, first-or-second @ 0, 15, 31), in %.
    from .serving.synthetic import TABLE5

    return dict(TABLE5)


MIXTRAL: dict[str, PaperEntry] = {
    "table5": PaperEntry(
        _table5(), f"{_MX}, §5, Table 5",
        "Percentage of consecutive-token pairs that repeat their expert, on subsets of The Pile, at layers "
        "0, 15 and 31: 'first' = same first choice, 'any' = the two top-2 sets share an expert. Values in %; "
        "see `mixtral_table5()`. The transcription is shared with moelab.serving.synthetic.TABLE5."),
    "table5_layers": PaperEntry((0, 15, 31), f"{_MX}, §5, Table 5 and Figure 7", "the three layers analysed, of 32"),
    "locality": PaperEntry(
        "Consecutive tokens are assigned the same experts more often than random routing would, "
        "markedly so at layers 15 and 31.", f"{_MX}, §5 and Table 5",
        "paraphrase; the paper compares with random assignment, not with a load-aware baseline"),
    "figure7_domains": PaperEntry(
        "No obvious pattern of expert assignment by topic: ArXiv, biology (PubMed Abstracts) and "
        "philosophy (PhilPapers) documents use the experts in very similar proportions.",
        f"{_MX}, §5, Figure 7", "paraphrase; experts counted as first or second choice, layers 0, 15, 31"),
    "figure7_dm_math": PaperEntry(
        "Only DM Mathematics is marginally different, which the authors attribute to its synthetic "
        "nature and its limited coverage of natural language, notably at the first and last layers.",
        f"{_MX}, §5, Figure 7", "paraphrase"),
    "figure8_syntax": PaperEntry(
        "The router shows structured syntactic behaviour: e.g. 'self' in Python and 'Question' in English "
        "often go to the same expert, and indentation tokens in code tend to share experts.",
        f"{_MX}, §5, Figure 8", "paraphrase; Figure 8 colours tokens by their first-choice expert"),
    "training_loss": PaperEntry(
        None, f"{_MX}, the whole paper",
        "The paper does not describe Mixtral's training objective: no auxiliary load-balancing loss, "
        "capacity factor or z-loss is stated. Do not attribute one to it."),
    "params": PaperEntry({"total_B": 47, "active_B": 13}, f"{_MX}, abstract",
                         "rounded; moelab.compute.count_params gives 46.70 B and 12.88 B"),
    "top_k": PaperEntry({"experts": 8, "top_k": 2}, f"{_MX}, §2", "8 experts per layer, 2 chosen per token"),
}

OLMOE: dict[str, PaperEntry] = {
    "architecture": PaperEntry({"experts": 64, "top_k": 8, "total_B": 6.9, "active_B": 1.3}, f"{_OL}, §2 and Table 1",
                               "64 fine-grained experts per layer, 8 per token, dropless token choice"),
    "no_renormalisation": PaperEntry(
        "The top-k routing probabilities are used as they come out of the softmax over all experts, "
        "without renormalising them to sum to 1.",
        "transformers' OLMoE implementation: OlmoeConfig(norm_topk_prob=False) by default",
        "from the released implementation, not a sentence of the paper"),
    "aux_losses": PaperEntry(
        "Trained with a load-balancing loss and a router z-loss (ST-MoE) added to the cross-entropy.",
        f"{_OL}, pretraining set-up", "paraphrase; the coefficients are given there"),
    "router_saturation": PaperEntry(
        "Routing saturates early in pretraining: checkpoints taken early already choose most of the "
        "final model's top-k experts on the same tokens, and saturation keeps rising with training.",
        f"{_OL}, §5, router saturation figure",
        "paraphrase; the paper's per-checkpoint percentages are not typed in here (not checked in this "
        "session). Plot moelab's saturation against the share of training, final checkpoint at 100 %."),
    "coactivation": PaperEntry(
        "Little co-activation between experts: few pairs of experts are used together much more often "
        "than others, i.e. the experts are not redundant.", f"{_OL}, §5, expert co-activation figure",
        "paraphrase; P(j | i) among tokens routed to i"),
    "domain_specialization": PaperEntry(
        "Strong domain specialization for domains unlike the bulk of the pretraining data (arXiv, "
        "GitHub), weak for general web text; much weaker specialization in Mixtral-8x7B.",
        f"{_OL}, §5, domain specialization figure", "paraphrase"),
    "vocabulary_specialization": PaperEntry(
        "Experts specialise on token ids, for input tokens and for predicted (output) tokens.",
        f"{_OL}, §5, vocabulary specialization figure",
        "paraphrase; the chance level of a max share over n occurrences is not 1/E (moelab.metrics.baselines)"),
}


def mixtral_table5() -> pd.DataFrame:
    """Table 5 as a DataFrame: rows domains, columns (first | any, layer) in %.

        >>> mixtral_table5().columns.tolist()[:3]
        [('first', 0), ('first', 15), ('first', 31)]
    """
    t = MIXTRAL["table5"].value
    cols = pd.MultiIndex.from_product([["first", "any"], [0, 15, 31]], names=["choice", "layer"])
    return pd.DataFrame([list(v) for v in t.values()], index=pd.Index(list(t), name="domain"), columns=cols)


def cite(entry: PaperEntry) -> str:
    """A caption line: the value (or statement) and its source.

        >>> cite(MIXTRAL["table5_layers"])
        '(0, 15, 31) (Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1), §5, Table 5 and Figure 7)'
    """
    return f"{entry.value} ({entry.source})"
