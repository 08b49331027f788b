"""lab: how should the Muon family of optimizers be run on nGPT?"""
