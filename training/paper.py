"""The paper's distillation numbers, written once (Sanh et al. 2019, section 3, and the authors' training
script): the softmax temperature of the soft targets and the weights of the triple loss. Every default
that means one of them reads it from here."""

TEMPERATURE = 2.0  # soft targets' temperature T (also task distillation's)
ALPHA_CE = 5.0  # L_ce: the teacher's soft targets over the vocabulary
ALPHA_MLM = 2.0  # L_mlm: the masked-language-modelling loss on the true tokens
ALPHA_COS = 1.0  # L_cos: cosine between student and teacher hidden states
