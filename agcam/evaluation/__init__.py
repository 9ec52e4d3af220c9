"""Evaluations of explanations, as pure functions of maps and models with loops that batch them:
box localization (:mod:`.localization`, :mod:`.boxes`, :mod:`.box_metrics`), the one perturbation
engine (:mod:`.curves`) and the tests that are settings of it: the ABPC faithfulness curves
(:mod:`.abpc`), Chefer's perturbation test and RISE's insertion/deletion (:mod:`.perturbation`);
MaxBoxAcc / MaxBoxAccV2 (:mod:`.wsol`), Chefer's segmentation test (:mod:`.segmentation`) and
every method's behaviour on the learnt model (:mod:`.learnt`)."""
