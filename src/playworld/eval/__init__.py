"""playworld.eval"""
