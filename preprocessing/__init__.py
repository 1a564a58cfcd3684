"""anycharv.preprocessing"""
