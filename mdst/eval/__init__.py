"""lm-evaluation-harness support: mdst models as an lm_eval model ("mdst"), and `mdst eval`'s run record.

`harness.py`: `MdstLM`, lm_eval's three request kinds over `Session.feed`'s all-row logits and `Model.generate`;
`register()` adds it to lm_eval's model registry (lm_eval has no plugin entry point for models, so
`python -m mdst.eval` is lm_eval's own command line with it registered); `record.py`: a run's JSON record and
the chance-rescaled aggregate. lm_eval is the optional extra `mdst[eval]`, imported only here, only when used.
"""
