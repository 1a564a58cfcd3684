"""anycharv.datasets"""
