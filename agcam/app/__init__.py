"""The page (``agcam app``): explanations of one image in a browser, on the same explainers and
figures as ``agcam explain``.

:mod:`.engine` computes (images checked before decoding, models loaded once and kept, raw maps
cached per image, model, method and class, figures drawn from the cache); :mod:`.page` lays it
out with Gradio (imported only there, and only when the page is built). The command is
:mod:`agcam.cli.app`.
"""
