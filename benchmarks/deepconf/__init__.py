"""DeepConf: the policy's own token confidence as guidance, with and without a reward."""
