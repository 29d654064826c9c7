from django.urls import path

from recognition import views

urlpatterns = [
    path("media/recordings/<int:pk>/", views.recording_audio, name="recording-audio"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
]
