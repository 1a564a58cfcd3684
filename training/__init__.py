"""anycharv.training"""
