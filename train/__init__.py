"""Training and evaluating the shipped small model (model/assets/dgbatch-small): synthetic task data
(train/synthdata.py), the tokenizer fit, the training forward and loop, and the quality report
(train/evaluate.py)."""
