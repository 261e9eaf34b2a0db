"""Model organisms with a known plant, and detectors measured on them (``likex zoo``).

A zoo is a folder of organisms made from one base: planted preferences of drawn strengths
(token substrings, character classes, word lists) and negatives (tilt-0 controls, benign
fine-tunes stopped at a planted organism's KL, the base itself), each with a manifest the
detectors never read. The modules, lowest first:

* ``texts``, ``folder``, ``power``: the installed texts of the benign fine-tunes; a zoo
  folder shared by independent jobs (shards, files written once, organism folders that appear
  whole, progress); a detector's power from repeated draws of its samples;
* ``draw``: the settings (``ZooConfig``) and the seeded draw of the organisms;
* ``manifest``, ``verdicts``: the truth about an organism; what a detector says about one;
* ``organisms``, ``suspects``: building one organism; what a detector sees (the base, the
  organism) and the ``Detector`` interface;
* ``detectors``, ``baselines``, ``scoring``: likex's audits as detectors, two baselines from
  the field (per-token KL ranking, MMD on samples), the verdicts scored against the manifests;
* ``results``, ``commands``: what the commands return, and their configs.

The commands themselves (``likex zoo build``, ``likex zoo audit``) are likex.pipelines.zoo.
"""
