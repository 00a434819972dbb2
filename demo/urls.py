from django.urls import path

from demo import views

app_name = "demo"
urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
]
