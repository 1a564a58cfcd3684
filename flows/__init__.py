"""anycharv.flows"""
