"""anycharv.model"""
