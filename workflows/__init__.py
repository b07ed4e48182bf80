"""Workflows"""
