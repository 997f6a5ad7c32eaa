"""Teachers: pretraining of generalist (label-free) and mixture (label-conditioned) teachers, teacher files,
the embedded default teacher; their offline datasets live in teacher/data/."""
