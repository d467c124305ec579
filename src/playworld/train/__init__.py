"""playworld.train"""
