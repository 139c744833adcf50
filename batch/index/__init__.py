"""FAISS: index choice by catalogue size, build (GPU when present), recall check, save."""
