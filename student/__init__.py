"""What the online learner adds on top of core: retrieval rehearsal, guidance priors, distillation."""
