"""What strategies share and are built from: sampling, scoring and grouping for selection
(:mod:`.selection`), reward readings (:mod:`.readings`), step-level search (:mod:`.steps`),
adaptive's stopping rules (:mod:`.stopping`), DeepConf's trace confidence and votes
(:mod:`.confidence`) and the tree search's parts (:mod:`.tree`)."""
