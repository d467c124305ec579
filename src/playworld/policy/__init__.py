"""playworld.policy"""
