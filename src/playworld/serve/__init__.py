"""playworld.serve"""
