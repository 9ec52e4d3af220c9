"""The names the command-line parsers offer as choices, in a module that imports nothing: the
perturbation tests and Chefer's AUC conventions (the modules that compute them,
:mod:`agcam.evaluation.perturbation` and :mod:`agcam.evaluation.curves`, import them from here),
so that ``--help`` and a usage error need no numpy or torch."""

#: the perturbation tests: Chefer's (positive, negative) and RISE's (insertion, deletion)
TESTS = ("positive", "negative", "insertion", "deletion")
#: the store target (class of the stored maps) each test needs; Chefer's test takes either
#: ("target": the label, "top": the predicted class)
NEEDED_TARGET = {"insertion": "predicted", "deletion": "predicted"}
#: Chefer's AUC conventions (perturbation tests), by name
CHEFER_AUC = ("sklearn_0_1", "trapezoid_0.1_0.9")
